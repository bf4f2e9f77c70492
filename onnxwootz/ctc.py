"""CTC text recognizers (PaddleOCR's PP-OCR and the like): the character set a model carries and
greedy decoding of its per-timestep class scores into strings.

PaddleOCR's convention, which its ONNX exports keep: the model's metadata key `character` holds
the dictionary, one character per line; class 0 is the CTC blank, classes 1..len(dict) are the
dictionary's characters in order, and one more class (the last) is the space when the model was
trained with `use_space_char` (its class count is then len(dict) + 2)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx

CHARSET_KEY = "character"


def charset_of(model: onnx.ModelProto, classes: int | None = None) -> list[str] | None:
    """The class-index -> text table of a CTC model ('' for the blank), from its metadata; None
    when the model carries none. `classes` (the output's last dim) decides whether a space
    class follows the dictionary."""
    text = next((entry.value for entry in model.metadata_props if entry.key == CHARSET_KEY), None)
    if text is None:
        return None
    table = [""] + text.splitlines()
    if classes is not None and classes == len(table) + 1:
        table.append(" ")
    return table


def ctc_greedy_decode(scores: np.ndarray, charset: Sequence[str]) -> list[str]:
    """(N, T, C) scores -> N strings: the best class per timestep, repeats merged, blanks
    (class 0) dropped. A class outside `charset` decodes to nothing."""
    scores = np.asarray(scores)
    if scores.ndim != 3:
        raise ValueError(f"CTC scores must be (batch, time, classes), got shape {scores.shape}")
    best = scores.argmax(axis=2)
    texts = []
    for row in best:
        keep = np.ones(len(row), dtype=bool)
        keep[1:] = row[1:] != row[:-1]
        texts.append("".join(charset[i] for i in row[keep] if 0 < i < len(charset)))
    return texts
