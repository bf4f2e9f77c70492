"""The glyphs benchmark task: deterministic rendering, shapes and labels, balanced classes, and a
pruning dataset that `onnxwootz.data.load_dataset` reads as the teacher's preprocessing says."""

from __future__ import annotations

import numpy as np

from benchmarks.tasks.glyphs import CLASSES, DEFAULT_SIZE, FONTS, make_pruning_dataset, render_glyphs
from onnxwootz.data import load_dataset
from onnxwootz.preprocess import Preprocess

NPZ_KEYS = ("x_train", "y_train", "x_val", "y_val")
"""The arrays make_pruning_dataset writes (labelled train and val; the loader makes the test split)."""

PREPROCESS = Preprocess(size=(DEFAULT_SIZE, DEFAULT_SIZE), channels=1, scale=1 / 255, mean=(0.5,), std=(0.5,))


def test_classes_are_many_and_distinct() -> None:
    assert len(CLASSES) >= 36
    assert len(set(CLASSES)) == len(CLASSES)
    assert len(FONTS) >= 10


def test_rendering_is_deterministic_for_a_seed() -> None:
    first, labels = render_glyphs(2, seed=7)
    again, labels_again = render_glyphs(2, seed=7)
    other, _ = render_glyphs(2, seed=8)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(labels, labels_again)
    assert not np.array_equal(first, other)


def test_shapes_dtypes_labels_and_balance() -> None:
    x, y = render_glyphs(3, seed=0, size=20)
    assert x.shape == (3 * len(CLASSES), 20, 20) and x.dtype == np.uint8
    assert y.shape == (len(x),) and y.dtype == np.int64
    assert y.min() == 0 and y.max() == len(CLASSES) - 1
    np.testing.assert_array_equal(np.bincount(y, minlength=len(CLASSES)), np.full(len(CLASSES), 3))


def test_every_image_shows_a_glyph() -> None:
    x, _ = render_glyphs(2, seed=1)
    contrast = x.reshape(len(x), -1).max(axis=1).astype(int) - x.reshape(len(x), -1).min(axis=1)
    assert contrast.min() > 60


def test_images_of_one_class_vary() -> None:
    x, y = render_glyphs(4, seed=2)
    same_class = x[y == 5]
    assert len({image.tobytes() for image in same_class}) == 4


def test_pruning_dataset_loads_and_splits_are_disjoint(tmp_path) -> None:
    path = make_pruning_dataset(tmp_path / "glyphs.npz", n_train_per_class=2, n_val_per_class=3, seed=4)
    assert path == tmp_path / "glyphs.npz" and path.is_file()
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == sorted(NPZ_KEYS)
        raw = {key: archive[key] for key in NPZ_KEYS}
    classes = len(CLASSES)
    np.testing.assert_array_equal(np.bincount(raw["y_train"], minlength=classes), np.full(classes, 2))
    np.testing.assert_array_equal(np.bincount(raw["y_val"], minlength=classes), np.full(classes, 3))
    train_images = {image.tobytes() for image in raw["x_train"]}
    assert not train_images & {image.tobytes() for image in raw["x_val"]}
    data = load_dataset(str(path), PREPROCESS, classes)
    assert data.x_train.shape == (2 * classes, 1, DEFAULT_SIZE, DEFAULT_SIZE)
    # no test split in the file: the loader gives it half of val per class (round(1.5) = 2)
    assert data.x_val.shape == (classes, 1, DEFAULT_SIZE, DEFAULT_SIZE)
    assert data.x_test.shape == (2 * classes, 1, DEFAULT_SIZE, DEFAULT_SIZE)
    assert data.x_train.dtype == np.float32 and -1.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    np.testing.assert_array_equal(np.bincount(data.y_val, minlength=classes), np.full(classes, 1))
    np.testing.assert_array_equal(np.sort(np.concatenate([data.y_val, data.y_test])), np.sort(raw["y_val"]))


def test_unlabeled_images_come_from_their_own_stream(tmp_path) -> None:
    path = make_pruning_dataset(tmp_path / "u.npz", n_train_per_class=1, n_val_per_class=1, seed=4,
                                n_unlabeled_per_class=2)
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == sorted((*NPZ_KEYS, "x_unlabeled"))
        unlabeled = {image.tobytes() for image in archive["x_unlabeled"]}
        labelled = {image.tobytes() for key in ("x_train", "x_val") for image in archive[key]}
    assert len(unlabeled) == 2 * len(CLASSES) and not unlabeled & labelled
    data = load_dataset(str(path), PREPROCESS, len(CLASSES))
    assert data.x_inputs.shape == (3 * len(CLASSES), 1, DEFAULT_SIZE, DEFAULT_SIZE)
