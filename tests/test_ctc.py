"""Greedy CTC decoding and the PaddleOCR character-set convention."""

import numpy as np
import onnx

from onnxwootz.ctc import charset_of, ctc_greedy_decode


def _scores(classes: list[int], width: int) -> np.ndarray:
    scores = np.zeros((1, len(classes), width), dtype=np.float32)
    scores[0, np.arange(len(classes)), classes] = 1.0
    return scores


def test_repeats_merge_and_blanks_split_them() -> None:
    charset = ["", "a", "b"]
    assert ctc_greedy_decode(_scores([1, 1, 0, 1, 2, 2, 0], 3), charset) == ["aab"]


def test_charset_from_metadata_adds_the_space_class_when_the_model_has_it() -> None:
    model = onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))
    model.metadata_props.add(key="character", value="x\ny")
    assert charset_of(model, classes=4) == ["", "x", "y", " "]
    assert charset_of(model, classes=3) == ["", "x", "y"]
    assert charset_of(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], []))) is None
