"""The OCR teachers and their rendered data: the wheel's models extracted and hash-checked, the
renderers deterministic and in the loader's layouts, and the real teachers working on the
renderings (the property that makes pruning them on this data meaningful)."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks.tasks import ocr as task
from models import ocr
from onnxwootz.core.errors import BadModelError, BadSpecError


@pytest.fixture(scope="module")
def teachers() -> dict[str, Path]:
    """The three teachers from the default cache: one pip download per machine."""
    return {name: ocr.ocr_model(name) for name in ocr.MODELS}


def _tree(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_models_are_extracted_and_hash_checked(teachers: dict[str, Path], tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(ocr._wheel(ocr.default_cache()), cache / ocr.WHEEL)
    for name, (_, digest) in ocr.MODELS.items():
        path = ocr.ocr_model(name, cache=cache)
        assert path.parent == cache and ocr._sha256(path) == digest
        assert path.read_bytes() == teachers[name].read_bytes()
    damaged = cache / Path(ocr.MODELS["cls"][0]).name
    damaged.write_bytes(b"not a model")
    assert ocr._sha256(ocr.ocr_model("cls", cache=cache)) == ocr.MODELS["cls"][1]
    assert not list(cache.glob(".*.tmp"))


def test_a_wheel_with_other_models_is_refused(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / ocr.WHEEL, "w") as archive:
        archive.writestr(ocr.MODELS["det"][0], b"other bytes")
    with pytest.raises(BadModelError, match="sha256"):
        ocr.ocr_model("det", cache=tmp_path)
    assert not (tmp_path / Path(ocr.MODELS["det"][0]).name).exists()
    with pytest.raises(BadModelError, match="unknown OCR model"):
        ocr.ocr_model("table", cache=tmp_path)


def test_cls_layout_and_determinism(tmp_path: Path) -> None:
    summary = task.render_cls(tmp_path / "a", n_train=6, n_val=2, n_test=4, seed=3)
    task.render_cls(tmp_path / "b", n_train=6, n_val=2, n_test=4, seed=3)
    task.render_cls(tmp_path / "c", n_train=6, n_val=2, n_test=4, seed=4)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    assert _tree(tmp_path / "a") != _tree(tmp_path / "c")
    assert summary.counts == {"train": 6, "val": 2, "test": 4}
    assert sorted(task.CLS_CLASSES) == list(task.CLS_CLASSES)
    for split, n in summary.counts.items():
        for name in task.CLS_CLASSES:
            files = sorted((tmp_path / "a" / split / name).glob("*.png"))
            assert len(files) == n // 2 == summary.class_counts[split][name]
            for file in files:
                with Image.open(file) as image:
                    assert image.mode == "RGB" and image.height == task.LINE_HEIGHT and 100 <= image.width <= 320


def test_rec_labels_match_the_images_the_check_scores(tmp_path: Path) -> None:
    summary = task.render_rec(tmp_path / "rec", n_train=3, n_val=0, n_test=5, seed=0)
    rows = [line.split("\t") for line in (tmp_path / "rec" / "test" / task.LABELS_FILE).read_text("utf-8").splitlines()]
    assert summary.counts["test"] == len(rows) == 5
    assert (tmp_path / "rec" / "val" / task.LABELS_FILE).read_text("utf-8") == ""
    expected = list(task.rec_samples(task._split_rngs(0, 1)["test"], 5))
    for (name, text), (crop, truth) in zip(rows, expected):
        assert text == truth and set(text) <= task.TEXT_CHARS and text.strip() == text
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "rec" / "test" / name)), crop)
        assert crop.shape[0] == task.LINE_HEIGHT and crop.shape[1] <= 320


def test_det_scenes_are_label_free_at_the_model_size(tmp_path: Path) -> None:
    task.render_det(tmp_path / "det", n_train=2, n_val=1, n_test=1, seed=0)
    for split in task.SPLITS:
        entries = list((tmp_path / "det" / split).iterdir())
        assert entries and all(entry.is_file() and entry.suffix == ".png" for entry in entries)
        with Image.open(entries[0]) as image:
            assert image.size == (task.DET_SIZE[1], task.DET_SIZE[0])
    with pytest.raises(BadSpecError, match="not empty"):
        task.render_det(tmp_path / "det", n_train=1, n_val=1, n_test=1)
    with pytest.raises(BadSpecError, match="multiples of 32"):
        task.render_det(tmp_path / "other", size=(100, 160))


def test_scene_boxes_enclose_their_text() -> None:
    """The recorded quadrilaterals are where the rotated ink is (the det check relies on them)."""
    mask = np.ones((20, 90), dtype=np.float32)
    rotated, corners = task._rotate(mask, 17.0)
    polygon = task._inside_boxes(rotated.shape, [corners])
    ink = rotated > 0.5
    assert (ink & polygon).sum() / (ink | polygon).sum() > 0.95


def test_text_scores() -> None:
    assert task.text_scores(["abc", "xy"], ["abc", "xz"]) == (0.5, 1 - 1 / 5)
    assert task.text_scores(["", "ab"], ["a", "ba"]) == (0.0, 1 - 3 / 3)


def test_teachers_work_on_the_renderings(teachers: dict[str, Path]) -> None:
    cls = task.check_cls(teachers["cls"], 40)
    rec = task.check_rec(teachers["rec"], 30)
    det = task.check_det(teachers["det"], 10)
    assert cls["top1"] >= 0.9
    assert rec["exact"] >= 0.7 and rec["char"] >= 0.9
    assert det["found"] >= 0.8 and det["on_inside_boxes"] >= 0.9 and det["mean_map"] < 0.2


def test_the_project_loader_reads_every_rendering(tmp_path: Path) -> None:
    """What `onnxwootz prune --data DIR --preprocess JSON` will see: class labels in the
    teacher's order, exact texts, label-free scenes, each split at the teacher's input size."""
    import json

    from onnxwootz.data import load_dataset
    from onnxwootz.preprocess import Preprocess

    counts = {"n_train": 4, "n_val": 2, "n_test": 2}
    task.render_cls(tmp_path / "cls", **counts)
    task.render_rec(tmp_path / "rec", **counts)
    task.render_det(tmp_path / "det", **counts)
    cls = load_dataset(str(tmp_path / "cls"), Preprocess.from_json(json.dumps(task.PREPROCESS["cls"])), num_classes=2)
    assert cls.labels == "class" and cls.x_test.shape == (2, 3, 48, 192)
    expected = [label for _, label in task.cls_samples(task._split_rngs(0, 0)["test"], 2)]
    assert sorted(cls.y_test.tolist()) == sorted(expected) == [0, 1]
    rec = load_dataset(str(tmp_path / "rec"), Preprocess.from_json(json.dumps(task.PREPROCESS["rec"])))
    assert rec.labels == "text" and rec.x_train.shape == (4, 3, 48, 320)
    assert rec.y_test.tolist() == [text for _, text in task.rec_samples(task._split_rngs(0, 1)["test"], 2)]
    det = load_dataset(str(tmp_path / "det"), Preprocess.from_json(json.dumps(task.PREPROCESS["det"])))
    assert det.labels is None and det.splits == {"train": 4, "val": 2, "test": 2, "unlabeled": 0}
    assert det.x_val.shape == (2, 3, *task.DET_SIZE)


def test_the_real_detector_and_recognizer_have_units_in_their_backbones(teachers: dict[str, Path]) -> None:
    """PP-OCRv4's detector feeds its FPN from every backbone stage and both nets are built of
    pointwise + depthwise pairs: single-tensor cuts alone gave the detector 3 module units (one
    held 97% of its filter weights) and the recognizer 5. Parked frontiers and depthwise convs
    joining their pointwise conv's module open the backbones."""
    from onnxwootz.passes.units import LARGE_MODULE_SHARE, ActivationOrder, modules
    from onnxwootz.prepared import prepare

    for name, shape, least in (("det", [1, 3, 160, 160], 20), ("rec", [1, 3, 48, 320], 15)):
        prepared = prepare(teachers[name], shape)
        assert len(prepared.units("module").units) >= least, name
        order = ActivationOrder(prepared.model)
        largest = max(sum(order.weights[order.position[node.name]] for node in module.nodes) for module in modules(order))
        assert largest <= LARGE_MODULE_SHARE * sum(order.weights), name
