"""Datasets, the preprocessing contract, and the bundled teacher evaluated from its own metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from onnxwootz.core.errors import BadDataError, BadSpecError
from onnxwootz.core.modelio import load_model
from onnxwootz.data import batches, load_dataset
from onnxwootz.preprocess import (
    PREPROCESS_KEY, Preprocess, accuracy_of, dataset_of, get_metadata, set_metadata,
)
from onnxwootz.runtime.sessions import cpu_session

TEACHER_PATH = Path(__file__).resolve().parents[1] / "models" / "digits_resnet.onnx"
DIGITS_PRE = Preprocess(size=(16, 16), channels=1, scale=1 / 16, mean=(0.5,), std=(0.5,))
IDENTITY_8 = Preprocess(size=(8, 8), channels=1)


def _empty_model() -> onnx.ModelProto:
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        [node], "g", [value("x", onnx.TensorProto.FLOAT, [1])], [value("y", onnx.TensorProto.FLOAT, [1])]
    )
    return onnx.helper.make_model(graph)


# ---------------------------------------------------------------- preprocess

def test_preprocess_metadata_round_trip_replaces_the_entry() -> None:
    model = _empty_model()
    assert Preprocess.from_model(model) is None
    assert dataset_of(model) is None and accuracy_of(model) is None
    Preprocess(size=(4, 4), channels=3).write_to(model)
    DIGITS_PRE.write_to(model)
    set_metadata(model, "onnxwootz.dataset", "digits")
    assert [p.key for p in model.metadata_props].count(PREPROCESS_KEY) == 1
    reloaded = onnx.load_from_string(model.SerializeToString())
    assert Preprocess.from_model(reloaded) == DIGITS_PRE
    assert dataset_of(reloaded) == "digits"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"size": [8, 8], "channels": 1, "scale": 1, "mean": [0]}', "lacks std"),
        ('{"size": [8], "channels": 1, "scale": 1, "mean": [0], "std": [1]}', "'size'"),
        ('{"size": [8, 8], "channels": 0, "scale": 1, "mean": [0], "std": [1]}', "'channels'"),
        ('{"size": [8, 8], "channels": 1, "scale": 0, "mean": [0], "std": [1]}', "'scale'"),
        ('{"size": [8, 8], "channels": 3, "scale": 1, "mean": [0, 0], "std": [1]}', "'mean'"),
        ('{"size": [8, 8], "channels": 1, "scale": 1, "mean": [0], "std": [0]}', "'std' must not contain zero"),
        ('{"size": [8, 8], "channels": 1, "scale": 1, "mean": [0], "std": [1], "crop": 1}', "unknown keys crop"),
    ],
)
def test_malformed_preprocess_metadata_is_one_clear_line(text: str, fragment: str) -> None:
    model = _empty_model()
    set_metadata(model, PREPROCESS_KEY, text)
    with pytest.raises(BadSpecError, match=fragment) as info:
        Preprocess.from_model(model)
    assert "\n" not in str(info.value)


def test_apply_layouts_channels_and_normalisation() -> None:
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (5, 8, 8)).astype(np.uint8)
    pre = Preprocess(size=(8, 8), channels=3, scale=1 / 255, mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.25))
    out = pre.apply(gray)
    assert out.shape == (5, 3, 8, 8) and out.dtype == np.float32
    for c, (m, s) in enumerate(zip(pre.mean, pre.std)):
        np.testing.assert_allclose(out[:, c], (gray / 255 - m) / s, rtol=1e-5, atol=1e-5)
    rgb = rng.random((4, 6, 6, 3)).astype(np.float32)
    nchw = Preprocess(size=(6, 6), channels=3).apply(rgb)
    np.testing.assert_array_equal(nchw, rgb.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(Preprocess(size=(6, 6), channels=3).apply(nchw), nchw)
    to_gray = Preprocess(size=(6, 6), channels=1).apply(rgb)
    np.testing.assert_allclose(to_gray[:, 0], rgb @ np.array([0.299, 0.587, 0.114]), rtol=1e-5)


def test_resize_matches_pillow_bilinear_both_ways() -> None:
    rng = np.random.default_rng(1)
    for source, target in (((8, 8), (16, 16)), ((37, 53), (16, 12))):
        image = rng.random(source).astype(np.float32)
        ours = Preprocess(size=target, channels=1).apply(image[None])[0, 0]
        pillow = np.asarray(Image.fromarray(image, mode="F").resize(target[::-1], Image.Resampling.BILINEAR))
        np.testing.assert_allclose(ours, pillow, atol=1e-5)


@pytest.mark.parametrize(
    "shape, fragment",
    [((8, 8), "rank 3 or 4"), ((2, 8, 8, 5), "no channel axis"), ((2, 1, 8, 8, 1), "rank 3 or 4")],
)
def test_apply_rejects_images_that_cannot_fit(shape: tuple[int, ...], fragment: str) -> None:
    with pytest.raises(BadDataError, match=fragment):
        IDENTITY_8.apply(np.zeros(shape))


def test_apply_rejects_channel_counts_the_model_cannot_take() -> None:
    with pytest.raises(BadDataError, match="3 channels; the model takes 2"):
        Preprocess(size=(8, 8), channels=2).apply(np.zeros((2, 3, 8, 8)))


# ---------------------------------------------------------------- digits

def test_digits_split_is_stratified_deterministic_and_shaped() -> None:
    first = load_dataset("digits", DIGITS_PRE, 10)
    second = load_dataset("digits", DIGITS_PRE, 10, seed=123)
    assert first.name == "digits" and first.labels == "class"
    assert first.x_train.shape == (1438, 1, 16, 16) and first.x_val.shape == (179, 1, 16, 16)
    assert first.x_test.shape == (180, 1, 16, 16)
    np.testing.assert_array_equal(first.x_test, second.x_test)
    assert first.x_train.dtype == np.float32 and first.y_train.dtype == np.int64
    np.testing.assert_array_equal(first.x_val, second.x_val)
    np.testing.assert_array_equal(first.y_train, second.y_train)
    train_share = np.bincount(first.y_train, minlength=10) / len(first.y_train)
    val_share = np.bincount(first.y_val, minlength=10) / len(first.y_val)
    assert np.abs(train_share - val_share).max() < 0.01
    assert first.x_train.min() == pytest.approx(-1.0) and first.x_train.max() == pytest.approx(1.0)
    train_rows = {row.tobytes() for row in first.x_train}
    val_rows = {row.tobytes() for row in first.x_val}
    assert sum(row.tobytes() in train_rows for row in first.x_val) < 5  # only true duplicates in the data
    assert sum(row.tobytes() in train_rows | val_rows for row in first.x_test) < 5


def test_digits_labels_must_fit_the_model() -> None:
    with pytest.raises(BadDataError, match=r"has labels 0\.\.9, outside \[0, 5\) \(the model has 5 outputs\)"):
        load_dataset("digits", DIGITS_PRE, 5)


def test_batches_cover_every_sample_once_shuffled() -> None:
    x, y = np.arange(10)[:, None], np.arange(10)
    rng = np.random.default_rng(0)
    seen = [(xb, yb) for xb, yb in batches(x, y, 4, rng)]
    assert [len(yb) for _, yb in seen] == [4, 4, 2]
    order = np.concatenate([yb for _, yb in seen])
    assert sorted(order) == list(range(10)) and list(order) != list(range(10))
    assert all((xb[:, 0] == yb).all() for xb, yb in seen)
    assert [len(yb) for _, yb in batches(x, y, 4, rng, drop_last=True)] == [4, 4]


# ---------------------------------------------------------------- ImageFolder

def _write_folder(root: Path, classes: list[str], per_class: int, size: tuple[int, int] = (8, 8),
                  splits: tuple[str, ...] = ("train", "val")) -> dict[tuple[str, str], list[np.ndarray]]:
    rng = np.random.default_rng(2)
    written: dict[tuple[str, str], list[np.ndarray]] = {}
    for split in splits:
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, size[::-1] + (3,), dtype=np.uint8)
                Image.fromarray(pixels, "RGB").save(folder / f"{i}.png")
                written.setdefault((split, name), []).append(pixels)
    return written


def test_image_folder_round_trip_with_sorted_class_names(tmp_path: Path) -> None:
    written = _write_folder(tmp_path, ["cat", "ant", "bee"], per_class=2, splits=("train", "val", "test"))
    (tmp_path / "train" / "ant" / "notes.txt").write_text("ignored")
    pre = Preprocess(size=(8, 8), channels=3, scale=1 / 255)
    data = load_dataset(str(tmp_path), pre, num_classes=3)
    assert data.name == tmp_path.name and data.splits == {"train": 6, "val": 6, "test": 6, "unlabeled": 0}
    assert list(data.y_train) == [0, 0, 1, 1, 2, 2]  # ant, bee, cat
    expected = np.stack(written[("test", "bee")]).transpose(0, 3, 1, 2) / 255
    np.testing.assert_allclose(data.x_test[2:4], expected, atol=1e-6)


def test_image_folder_numeric_names_are_indices_and_sizes_are_unified(tmp_path: Path) -> None:
    _write_folder(tmp_path, ["2", "7"], per_class=2, size=(12, 10))
    data = load_dataset(str(tmp_path), IDENTITY_8, num_classes=10)
    assert data.x_train.shape == (4, 1, 8, 8)
    assert sorted(set(data.y_train)) == [2, 7] and sorted(set(data.y_val)) == [2, 7]


def test_image_folder_without_val_is_split_by_seed(tmp_path: Path) -> None:
    _write_folder(tmp_path, ["a", "b"], per_class=10, splits=("train",))
    one = load_dataset(str(tmp_path), IDENTITY_8, num_classes=2, seed=0)
    again = load_dataset(str(tmp_path), IDENTITY_8, num_classes=2, seed=0)
    other = load_dataset(str(tmp_path), IDENTITY_8, num_classes=2, seed=1)
    assert len(one.y_train) == 14 and list(np.bincount(one.y_val)) == [1, 1]
    assert list(np.bincount(one.y_test)) == [2, 2]
    np.testing.assert_array_equal(one.x_val, again.x_val)
    np.testing.assert_array_equal(one.x_test, again.x_test)
    assert not np.array_equal(one.x_val, other.x_val)


def test_image_folder_errors(tmp_path: Path) -> None:
    _write_folder(tmp_path, ["a", "b"], per_class=1)
    with pytest.raises(BadDataError, match=r"labels 0\.\.1, outside \[0, 1\)"):
        load_dataset(str(tmp_path), IDENTITY_8, num_classes=1)
    (tmp_path / "train" / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(BadDataError, match="cannot read image .*broken.png"):
        load_dataset(str(tmp_path), IDENTITY_8, num_classes=2)
    empty = tmp_path / "empty"
    (empty / "train" / "a").mkdir(parents=True)
    (empty / "val" / "a").mkdir(parents=True)
    with pytest.raises(BadDataError, match="train split of dataset 'empty' is empty"):
        load_dataset(str(empty), IDENTITY_8, num_classes=2)
    no_train = tmp_path / "no_train"
    (no_train / "val" / "a").mkdir(parents=True)
    (no_train / "test" / "a").mkdir(parents=True)
    with pytest.raises(BadDataError, match="has val/test/ but no train/ folder"):
        load_dataset(str(no_train), IDENTITY_8, num_classes=2)


# ---------------------------------------------------------------- npz

def _npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return str(path)


def test_npz_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    arrays = {"x_train": rng.random((6, 8, 8, 1)), "y_train": np.arange(6) % 3,
              "x_val": rng.random((3, 1, 8, 8)), "y_val": np.array([0.0, 1.0, 2.0]),
              "x_test": rng.random((2, 8, 8)), "y_test": np.array([2, 2])}
    data = load_dataset(_npz(tmp_path / "d.npz", **arrays), IDENTITY_8, num_classes=3)
    np.testing.assert_allclose(data.x_train, arrays["x_train"].transpose(0, 3, 1, 2), rtol=1e-6)
    np.testing.assert_allclose(data.x_val, arrays["x_val"], rtol=1e-6)
    np.testing.assert_allclose(data.x_test, arrays["x_test"][:, None], rtol=1e-6)
    assert data.y_val.dtype == np.int64 and list(data.y_val) == [0, 1, 2] and list(data.y_test) == [2, 2]
    assert data.name == "d.npz"


@pytest.mark.parametrize(
    "arrays, fragment",
    [
        ({"x_train": np.zeros((2, 8, 8)), "y_train": np.zeros(2)}, "needs at least 3 images"),
        ({"x_train": np.zeros((2, 8, 8)), "y_train": np.zeros(2), "x_val": np.zeros((2, 8, 8))},
         "the val split has no labels but train has class labels"),
        ({"x_train": np.zeros((2, 8, 8)), "y_train": np.zeros(2), "x_test": np.zeros((2, 8, 8))},
         "has a test split but no val split"),
        ({"x_train": np.zeros((2, 8, 8)), "y_train": np.zeros(2), "x_val": np.zeros((1, 8, 8)),
          "y_val": np.zeros(1)}, "too few val images"),
        ({"x_train": np.zeros((2, 8, 8)), "y_train": np.zeros(3), "x_val": np.zeros((2, 8, 8)),
          "y_val": np.zeros(2)}, "train split .* has 2 images but 3 labels"),
        ({"x_train": np.zeros((0, 8, 8)), "y_train": np.zeros(0), "x_val": np.zeros((2, 8, 8)),
          "y_val": np.zeros(2)}, "train split .* is empty"),
        ({"x_train": np.zeros((2, 8, 8)), "y_train": np.zeros(2), "x_val": np.zeros((2, 8, 8)),
          "y_val": np.array([-1, -1])}, r"labels -1\.\.-1, outside \[0, 10\)"),
        ({"x_train": np.zeros((2, 8, 8)), "y_train": np.array([0.5, 1]), "x_val": np.zeros((2, 8, 8)),
          "y_val": np.zeros(2)}, "must be integers or strings"),
        ({"x_train": np.zeros((2, 8, 8)), "y_train": np.zeros(2), "x_val": np.zeros((2, 8, 8)),
          "y_val": np.array(["a", "b"])}, "the val split has text labels but train has class labels"),
        ({"x_train": np.zeros((2, 64)), "y_train": np.zeros(2), "x_val": np.zeros((2, 64)),
          "y_val": np.zeros(2)}, r"\(train\): images must be NHW, NHWC or NCHW"),
        ({"x_train": np.zeros((2, 2, 8, 8)), "y_train": np.zeros(2), "x_val": np.zeros((2, 8, 8)),
          "y_val": np.zeros(2)}, "no channel axis of size 1, 3 or 1"),
        ({"x_train": np.array([None, None]), "y_train": np.zeros(2), "x_val": np.zeros((2, 8, 8)),
          "y_val": np.zeros(2)}, "cannot read .*pickle"),
        ({"x_train": np.zeros((3, 8, 8)), "labels": np.zeros(3)}, "unknown arrays labels"),
        ({"y_train": np.zeros(3)}, r"has no x_train \(or x\)"),
    ],
)
def test_npz_errors(tmp_path: Path, arrays: dict[str, np.ndarray], fragment: str) -> None:
    with pytest.raises(BadDataError, match=fragment) as info:
        load_dataset(_npz(tmp_path / "bad.npz", **arrays), IDENTITY_8, num_classes=10)
    assert "\n" not in str(info.value)


def test_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(BadDataError, match="unknown dataset 'mnist'"):
        load_dataset("mnist", IDENTITY_8, 10)
    with pytest.raises(BadDataError, match="dataset path not found: .*nowhere.npz"):
        load_dataset(str(tmp_path / "nowhere.npz"), IDENTITY_8, 10)
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(BadDataError, match="not a dataset: .*data.csv"):
        load_dataset(str(tmp_path / "data.csv"), IDENTITY_8, 10)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(BadDataError, match="not a readable .npz file"):
        load_dataset(str(tmp_path / "junk.npz"), IDENTITY_8, 10)


# ---------------------------------------------------------------- the bundled teacher

def test_bundled_teacher_reaches_its_recorded_accuracy_in_onnx_runtime() -> None:
    model = load_model(TEACHER_PATH)
    preprocess = Preprocess.from_model(model)
    assert preprocess is not None and dataset_of(model) == "digits"
    assert get_metadata(model, "onnxwootz.accuracy") is not None
    assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == ["logits"]
    data = load_dataset(dataset_of(model), preprocess, num_classes=10)
    held_out = np.concatenate([data.x_val, data.x_test])  # the split the accuracy was recorded on
    logits = cpu_session(model).run(["logits"], {"input": held_out})[0]
    measured = float((logits.argmax(1) == np.concatenate([data.y_val, data.y_test])).mean())
    recorded = accuracy_of(model)
    assert recorded is not None and recorded >= 0.97
    assert abs(measured - recorded) <= 0.005
    assert sum(int(np.prod(init.dims)) for init in model.graph.initializer) < 100_000


def test_unlabeled_images_join_the_label_free_inputs(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    arrays = {"x_train": rng.random((4, 8, 8)), "y_train": np.arange(4) % 2, "x_val": rng.random((2, 8, 8)),
              "y_val": np.array([0, 1]), "x_unlabeled": rng.random((5, 8, 8))}
    data = load_dataset(_npz(tmp_path / "u.npz", **arrays), IDENTITY_8, num_classes=2)
    assert data.x_unlabeled.shape == (5, 1, 8, 8)
    np.testing.assert_allclose(data.x_inputs, np.concatenate([arrays["x_train"], arrays["x_unlabeled"]])[:, None],
                               rtol=1e-6)
    del arrays["x_unlabeled"]
    plain = load_dataset(_npz(tmp_path / "p.npz", **arrays), IDENTITY_8, num_classes=2)
    assert plain.x_unlabeled is None and plain.x_inputs is plain.x_train


def test_image_folder_reads_an_unlabeled_folder(tmp_path: Path) -> None:
    _write_folder(tmp_path, ["a", "b"], per_class=1)
    nested = tmp_path / "unlabeled" / "batch1"
    nested.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8), "RGB").save(nested / f"{i}.png")
    data = load_dataset(str(tmp_path), IDENTITY_8, num_classes=2)
    assert data.x_unlabeled.shape == (3, 1, 8, 8) and len(data.x_inputs) == len(data.x_train) + 3


# ---------------------------------------------------------------- label-free and text datasets

def _write_images(folder: Path, count: int, rng: np.random.Generator, widths: tuple[int, int] = (8, 8)) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        width = int(rng.integers(widths[0], widths[1] + 1))
        Image.fromarray(rng.integers(0, 256, (8, width, 3), dtype=np.uint8), "RGB").save(folder / f"{i:03d}.png")
        names.append(f"{i:03d}.png")
    return names


def test_plain_images_are_a_label_free_pool_split_70_15_15(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    _write_images(tmp_path / "a", 12, rng)
    _write_images(tmp_path / "b" / "deeper", 8, rng)
    (tmp_path / "top.png").write_bytes((tmp_path / "a" / "000.png").read_bytes())  # an image in the root itself
    one = load_dataset(str(tmp_path), IDENTITY_8, seed=0)
    assert one.labels is None and one.y_train is None and one.y_test is None
    assert one.splits == {"train": 15, "val": 3, "test": 3, "unlabeled": 0}
    again = load_dataset(str(tmp_path), IDENTITY_8, seed=0)
    np.testing.assert_array_equal(one.x_test, again.x_test)
    rows = [{row.tobytes() for row in x} for x in (one.x_train, one.x_val, one.x_test)]
    assert sum(map(len, rows)) == 20  # 21 files, of which top.png repeats a/000.png
    assert not rows[1] & rows[2]


def test_class_folders_without_split_folders_are_labelled_and_stratified(tmp_path: Path) -> None:
    _write_folder(tmp_path / "pool", ["a", "b"], per_class=10, splits=("x",))
    data = load_dataset(str(tmp_path / "pool" / "x"), IDENTITY_8, num_classes=2)
    assert data.labels == "class" and list(np.bincount(data.y_test)) == [2, 2]


def test_text_labels_from_labels_tsv_in_each_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    for split, count in (("train", 6), ("val", 2), ("test", 2)):
        names = _write_images(tmp_path / split, count, rng, widths=(10, 40))
        (tmp_path / split / "labels.tsv").write_text("".join(f"{n}\t{split} {i}\n" for i, n in enumerate(names)))
    pad = Preprocess(size=(8, 32), channels=3, resize="pad")
    data = load_dataset(str(tmp_path), pad)
    assert data.labels == "text" and list(data.y_test) == ["test 0", "test 1"]
    assert data.x_train.shape == (6, 3, 8, 32) and data.y_train.dtype.kind == "U"
    (tmp_path / "val" / "labels.tsv").write_text("missing.png\tx\n")
    with pytest.raises(BadDataError, match=r"labels.tsv:1: no such image missing.png"):
        load_dataset(str(tmp_path), pad)
    (tmp_path / "val" / "labels.tsv").write_text("000.png no tab\n")
    with pytest.raises(BadDataError, match=r"labels.tsv:1: expected 'file<TAB>text'"):
        load_dataset(str(tmp_path), pad)


def test_npz_without_labels_and_with_text_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    pool = load_dataset(_npz(tmp_path / "x.npz", x=rng.random((20, 8, 8))), IDENTITY_8)
    assert pool.labels is None and pool.splits == {"train": 14, "val": 3, "test": 3, "unlabeled": 0}
    texts = load_dataset(_npz(tmp_path / "t.npz", x_train=rng.random((4, 8, 8)), y_train=np.array(["a", "b"] * 2),
                              x_val=rng.random((2, 8, 8)), y_val=np.array(["c", "d"])), IDENTITY_8)
    assert texts.labels == "text" and sorted([*texts.y_val, *texts.y_test]) == ["c", "d"]


def test_empty_directory_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(BadDataError, match="holds no images"):
        load_dataset(str(tmp_path), IDENTITY_8)


def test_confirmation_split_holds_out_a_share_of_val_per_class_and_is_deterministic(tmp_path: Path) -> None:
    whole = load_dataset("digits", IDENTITY_8, 10)
    split = whole.with_confirmation(0.5, seed=2)
    assert whole.with_confirmation(0.0, seed=2) is whole and whole.x_confirm is None and "confirm" not in whole.splits
    assert split.splits == {**whole.splits, "val": len(split.x_val), "confirm": len(split.x_confirm)}
    assert len(split.x_val) + len(split.x_confirm) == len(whole.x_val)
    rows = [{row.tobytes() for row in x} for x in (split.x_val, split.x_confirm)]
    assert not rows[0] & rows[1] and rows[0] | rows[1] == {row.tobytes() for row in whole.x_val}
    per_class = np.bincount(split.y_confirm, minlength=10), np.bincount(whole.y_val, minlength=10)
    assert np.all(np.abs(per_class[0] - per_class[1] / 2) <= 1)  # stratified: half of every class, rounded
    np.testing.assert_array_equal(split.x_confirm, whole.with_confirmation(0.5, seed=2).x_confirm)
    np.testing.assert_array_equal(split.x_train, whole.x_train)  # train and test are untouched
    np.testing.assert_array_equal(split.x_test, whole.x_test)
    tiny = load_dataset(_npz(tmp_path / "t.npz", x_train=np.zeros((4, 8, 8)), x_val=np.zeros((2, 8, 8))), IDENTITY_8)
    with pytest.raises(BadDataError, match=r"val split .*\(1 images\) is too small .*confirm_fraction = 0"):
        tiny.with_confirmation(0.5, seed=2)
