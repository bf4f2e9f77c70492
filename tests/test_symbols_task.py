"""The symbols benchmark task: every font draws every class and no two classes alike, seeded
rendering of colour images, a pruning dataset with disjoint few-shot splits that
`onnxwootz.data.load_dataset` reads as the teacher's preprocessing says, and a teacher
architecture that exports to a checked ONNX graph (no training here)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image

from benchmarks.tasks import glyphs
from benchmarks.tasks.symbols import CLASSES, DEFAULT_SIZE, font_paths, make_pruning_dataset, masters, render_symbols
from models import symbols_teacher
from onnxwootz.data import load_dataset
from onnxwootz.preprocess import ACCURACY_KEY, DATASET_KEY, Preprocess, get_metadata

SPLITS = ("train", "val", "test")


def _shape_vector(glyph: np.ndarray) -> np.ndarray:
    """A master glyph as a unit vector of 16x16 ink: how alike two signs look once scaled."""
    small = np.asarray(Image.fromarray(glyph).resize((16, 16), Image.Resampling.BOX), dtype=np.float64).ravel()
    return small / np.linalg.norm(small)


def test_classes_are_many_distinct_and_unlike_glyphs() -> None:
    assert len(CLASSES) >= 40 and len(set(CLASSES)) == len(CLASSES)
    assert not set(CLASSES) & set(glyphs.CLASSES)
    assert len(font_paths()) >= 10


def test_every_font_draws_every_class_and_no_two_alike() -> None:
    rendered = masters()
    assert len(rendered) == len(font_paths())
    for path, font in zip(font_paths(), rendered):
        assert len(font) == len(CLASSES)
        assert min(int((glyph > 127).sum()) for glyph in font) > 20, path.name
        vectors = np.stack([_shape_vector(glyph) for glyph in font])
        distance = np.linalg.norm(vectors[:, None] - vectors[None], axis=-1) + 9 * np.eye(len(font))
        first, second = np.unravel_index(distance.argmin(), distance.shape)
        assert distance.min() > 0.2, f"{path.name}: '{CLASSES[first]}' and '{CLASSES[second]}' look alike"


def test_rendering_is_deterministic_colour_and_balanced() -> None:
    x, y = render_symbols(2, seed=7, size=20)
    again, labels_again = render_symbols(2, seed=7, size=20)
    other, _ = render_symbols(2, seed=8, size=20)
    np.testing.assert_array_equal(x, again)
    np.testing.assert_array_equal(y, labels_again)
    assert not np.array_equal(x, other)
    assert x.shape == (2 * len(CLASSES), 20, 20, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y, minlength=len(CLASSES)), np.full(len(CLASSES), 2))
    assert (x.max(axis=(1, 2)) - x.min(axis=(1, 2))).max(axis=1).min() > 60  # every symbol shows
    assert np.abs(x[..., 0].astype(int) - x[..., 2]).mean() > 10  # colour, not gray in three channels
    assert len({image.tobytes() for image in x[y == 3]}) == 2


def test_pruning_dataset_has_disjoint_few_shot_splits(tmp_path) -> None:
    path = make_pruning_dataset(tmp_path / "symbols.npz", n_train_per_class=2, n_val_per_class=3,
                                n_test_per_class=2, seed=4, n_unlabeled_per_class=1)
    classes = len(CLASSES)
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == sorted([f"{a}_{s}" for a in "xy" for s in SPLITS] + ["x_unlabeled"])
        raw = {key: archive[key] for key in archive.files}
    for split, count in zip(SPLITS, (2, 3, 2)):
        np.testing.assert_array_equal(np.bincount(raw[f"y_{split}"], minlength=classes), np.full(classes, count))
    images = [{image.tobytes() for image in raw[f"x_{split}"]} for split in (*SPLITS, "unlabeled")]
    assert sum(map(len, images)) == len(set().union(*images)) == 8 * classes  # no image in two splits
    teacher_images, _ = render_symbols(1, seed=symbols_teacher.TEACHER_SEED)
    assert not {image.tobytes() for image in teacher_images} & set().union(*images)
    data = load_dataset(str(path), symbols_teacher.PREPROCESS, classes)
    assert data.splits == {"train": 2 * classes, "val": 3 * classes, "test": 2 * classes, "unlabeled": classes}
    assert data.x_train.shape == (2 * classes, 3, DEFAULT_SIZE, DEFAULT_SIZE) and data.x_train.dtype == np.float32
    assert -1.0 <= data.x_val.min() and data.x_val.max() <= 1.0


def test_teacher_seeds_differ_from_the_pruning_streams() -> None:
    from benchmarks.tasks.symbols import UNLABELED_SEED_OFFSET

    seed = symbols_teacher.PRUNING_SEED
    assert symbols_teacher.TEACHER_SEED not in (seed, seed + UNLABELED_SEED_OFFSET)


def test_teacher_architecture_exports_checked_with_its_contract() -> None:
    torch.manual_seed(0)
    model = symbols_teacher.symbols_net().eval()
    exported = symbols_teacher.export(model, 0.5)  # runs onnx.checker (full check)
    ops = [node.op_type for node in exported.graph.node]
    assert "Sigmoid" in ops and "GlobalAveragePool" in ops  # squeeze-excitation gates
    groups = [a.i for node in exported.graph.node if node.op_type == "Conv" for a in node.attribute if a.name == "group"]
    assert max(groups) > 1  # depthwise convs
    assert Preprocess.from_model(exported) == symbols_teacher.PREPROCESS
    assert get_metadata(exported, DATASET_KEY) == "symbols" and get_metadata(exported, ACCURACY_KEY) == "0.500000"
    session = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(3, 3, DEFAULT_SIZE, DEFAULT_SIZE)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    (logits,) = session.run(None, {session.get_inputs()[0].name: x})
    assert logits.shape == (3, len(CLASSES))
    np.testing.assert_allclose(logits, expected, atol=1e-4)
