"""What the two rendered few-shot tasks (glyphs, symbols) promise alike: bad arguments to the
renderer or to the dataset writer are one-line BadSpecErrors, raised before anything is
written."""

from __future__ import annotations

import pytest

from benchmarks.tasks import glyphs, symbols
from onnxwootz.core.errors import BadSpecError

TASKS = {
    "glyphs": (glyphs.render_glyphs, glyphs.make_pruning_dataset, {"n_train_per_class": 0}),
    "symbols": (symbols.render_symbols, symbols.make_pruning_dataset, {"n_test_per_class": 0}),
}
"""Per task: its renderer, its dataset writer, and a split size the writer must refuse."""


@pytest.mark.parametrize("task", sorted(TASKS))
def test_bad_arguments_are_one_line_errors(task: str, tmp_path) -> None:
    render, make_pruning_dataset, empty_split = TASKS[task]
    with pytest.raises(BadSpecError):
        render(-1, seed=0)
    with pytest.raises(BadSpecError):
        render(1, seed=0, size=4)
    with pytest.raises(BadSpecError):
        make_pruning_dataset(tmp_path / "unused.npz", **empty_split)
    assert not (tmp_path / "unused.npz").exists()
