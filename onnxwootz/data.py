"""Datasets as preprocessed numpy arrays, in three splits: train (training and block
pre-training), val (every decision: the bound, early stops, the answer; `prune` holds part of it
out to confirm an answer, `Dataset.with_confirmation`) and test (the figure a run reports, seen
by no decision). One clear error line for anything malformed.

Sources:
- `digits`: scikit-learn's handwritten digits (the bundled teacher's task).
- A directory. With split folders `train/` (and optionally `val/`, `test/`), each holds class
  folders (`<class>/*.png`: class labels), or images with a `labels.tsv` (`file<TAB>text`
  lines: string labels, for recognizers), or plain images (no labels). Without split folders
  the root is one pool: a root `labels.tsv` gives string labels; class folders alone (no image
  directly in the root) give class labels; otherwise every image below the root is an
  unlabeled sample. An `unlabeled/` folder adds images without labels to any of these.
- An .npz file: `x_train`, `y_train`, `x_val`, `y_val`, optional `x_test`, `y_test` and
  `x_unlabeled`; or, without labels, `x_train`, `x_val` (and `x_test`), or `x` alone. Labels
  are integers (class indices) or unicode strings (texts).

Missing splits are made deterministically (stratified for class labels): a source with no
test split gives half of its validation split to it (validation images are the ones a
teacher was not trained on); a source with train only is split 70/15/15."""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from onnxwootz.core.errors import BadDataError, first_line
from onnxwootz.preprocess import Preprocess

DIGITS = "digits"
DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
"""The digits split never depends on the caller's seed: the bundled teacher's recorded accuracy
is measured on this exact held-out set (now val + test), and its training images stay out of it."""
SPLITS = ("train", "val", "test")
HELD_OUT_FRACTION = 0.3
"""A source with train images only keeps 70% for training, 15% for val and 15% for test."""
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
LABELS_FILE = "labels.tsv"
UNLABELED = "unlabeled"
NPZ_UNLABELED = "x_unlabeled"
_EXPECTED = (f"'{DIGITS}', a directory (train/<class>/*.png, val/..., test/...; images with {LABELS_FILE}; "
             "or plain images) or an .npz file")

Labels = np.ndarray | None
"""int64 class indices, a unicode array of texts, or None (label-free)."""


@dataclasses.dataclass
class Dataset:
    """Preprocessed float32 model inputs for each split, with their labels (or None)."""

    x_train: np.ndarray
    y_train: Labels
    x_val: np.ndarray
    y_val: Labels
    x_test: np.ndarray
    y_test: Labels
    name: str
    x_unlabeled: np.ndarray | None = None
    x_confirm: np.ndarray | None = None
    y_confirm: Labels = None

    @property
    def labels(self) -> str | None:
        """'class', 'text' or None: what the labels are, the same in every split."""
        return _label_kind(self.y_train)

    @property
    def x_inputs(self) -> np.ndarray:
        """Every training image without its label: what label-free (teacher-student) training
        may use. Never validation or test images."""
        if self.x_unlabeled is None or len(self.x_unlabeled) == 0:
            return self.x_train
        return np.concatenate([self.x_train, self.x_unlabeled])

    @property
    def splits(self) -> dict[str, int]:
        unlabeled = 0 if self.x_unlabeled is None else len(self.x_unlabeled)
        counts = {"train": len(self.x_train), "val": len(self.x_val), "test": len(self.x_test), "unlabeled": unlabeled}
        return counts if self.x_confirm is None else {**counts, "confirm": len(self.x_confirm)}

    def with_confirmation(self, fraction: float, seed: int) -> "Dataset":
        """`fraction` of the validation images (per class) held out as the confirmation split:
        searching looks at the rest after every evaluation of every candidate, so the candidate
        that first passes there is the one luckiest on those images; the confirmation split is
        looked at only when a candidate has passed, and its answer is not selected on it."""
        if not fraction:
            return self
        kept, held = _split_indices(len(self.x_val), self.y_val, fraction, seed)
        if not len(kept) or not len(held):
            raise BadDataError(f"the val split of dataset '{self.name}' ({len(self.x_val)} images) is too small to "
                               f"hold out {fraction:g} of it for confirmation: give more val images or set "
                               "confirm_fraction = 0")
        y_val = self.y_val
        return dataclasses.replace(self, x_val=self.x_val[kept], y_val=None if y_val is None else y_val[kept],
                                   x_confirm=self.x_val[held], y_confirm=None if y_val is None else y_val[held])


def load_dataset(spec: str, preprocess: Preprocess, num_classes: int | None = None, seed: int = 0) -> Dataset:
    """Load `spec` ('digits', a directory or an .npz file), preprocessed for the model. Class
    labels are checked against `num_classes` when it is given; `seed` only makes the splits a
    source does not have itself."""
    if spec == DIGITS:
        raw = _preprocessed(_digits(), preprocess, DIGITS)
    else:
        path = Path(spec)
        if not path.exists():
            if path.suffix or len(path.parts) > 1:
                raise BadDataError(f"dataset path not found: {spec}")
            raise BadDataError(f"unknown dataset '{spec}' (expected {_EXPECTED})")
        if path.is_dir():
            raw = _directory(path, preprocess)
        elif path.suffix.lower() == ".npz":
            raw = _preprocessed(_npz(path), preprocess, path.name)
        else:
            raise BadDataError(f"not a dataset: {spec} (expected {_EXPECTED})")
    name = DIGITS if spec == DIGITS else Path(spec).name
    raw = _complete_splits(raw, name, seed)
    kind = _label_kind(raw["y_train"])
    out: dict[str, object] = {}
    for split in SPLITS:
        images, labels = raw[f"x_{split}"], raw[f"y_{split}"]
        if _length(images) == 0:
            raise BadDataError(f"the {split} split of dataset '{name}' is empty")
        if _label_kind(labels) != kind:
            raise BadDataError(f"dataset '{name}': the {split} split has {_describe(labels)} but train has "
                               f"{_describe(raw['y_train'])}")
        if labels is not None and len(labels) != _length(images):
            raise BadDataError(f"the {split} split of dataset '{name}' has {_length(images)} images but "
                               f"{len(labels)} labels")
        out[f"x_{split}"] = images
        out[f"y_{split}"] = _labels(labels, num_classes, name, split)
    unlabeled = raw.get(NPZ_UNLABELED)
    if unlabeled is not None and _length(unlabeled):
        out[NPZ_UNLABELED] = unlabeled
    return Dataset(**out, name=name)


def batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator, drop_last: bool = False
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One shuffled pass over (x, y) in batches; `drop_last` skips a short final batch
    (BatchNorm in training mode cannot take a batch of one)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = rng.permutation(len(x))
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        if drop_last and len(index) < batch_size:
            return
        yield x[index], y[index]


# ---------------------------------------------------------------- splits and labels

def _length(images: np.ndarray | None) -> int:
    return 0 if images is None else len(images)


def _label_kind(labels: Labels) -> str | None:
    if labels is None:
        return None
    return "text" if np.asarray(labels).dtype.kind == "U" else "class"


def _describe(labels: Labels) -> str:
    kind = _label_kind(labels)
    return "no labels" if kind is None else f"{kind} labels"


def _split_indices(count: int, labels: Labels, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out), each sorted: `fraction` of the items held out, per class when
    the labels are classes (so every class keeps its proportion)."""
    rng = np.random.default_rng(seed)
    groups = ([np.flatnonzero(labels == value) for value in np.unique(labels)]
              if _label_kind(labels) == "class" else [np.arange(count)])
    kept, held = [], []
    for members in groups:
        members = rng.permutation(members)
        size = int(round(len(members) * fraction))
        held.append(members[:size])
        kept.append(members[size:])
    if count >= 2 and not sum(map(len, held)):  # tiny classes all round to 0: hold one out anyway
        largest = max(range(len(kept)), key=lambda g: len(kept[g]))
        held[largest], kept[largest] = kept[largest][:1], kept[largest][1:]
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def _divide(raw: dict, source: str, target: str, fraction: float, seed: int) -> None:
    """Move `fraction` of split `source` into the new split `target`."""
    images, labels = raw[f"x_{source}"], raw.get(f"y_{source}")
    kept, held = _split_indices(_length(images), labels, fraction, seed)
    raw[f"x_{source}"], raw[f"x_{target}"] = images[kept], images[held]
    raw[f"y_{source}"] = None if labels is None else labels[kept]
    raw[f"y_{target}"] = None if labels is None else labels[held]


def _complete_splits(raw: dict, name: str, seed: int) -> dict:
    """Every split present: test from half of val, or val and test from train (70/15/15)."""
    raw = dict(raw)
    for split in SPLITS:
        raw.setdefault(f"y_{split}", None)
    if _length(raw.get("x_train")) == 0:
        raise BadDataError(f"the train split of dataset '{name}' is empty")
    if _length(raw.get("x_val")) == 0:
        if _length(raw.get("x_test")):
            raise BadDataError(f"dataset '{name}' has a test split but no val split: give both or neither")
        if _length(raw["x_train"]) < 3:
            raise BadDataError(f"dataset '{name}' needs at least 3 images to split into train, val and test")
        _divide(raw, "train", "val", HELD_OUT_FRACTION, seed)
        _divide(raw, "val", "test", 0.5, seed + 1)
    elif _length(raw.get("x_test")) == 0:
        if _length(raw["x_val"]) < 2:
            raise BadDataError(f"dataset '{name}' has no test split and too few val images to make one")
        _divide(raw, "val", "test", 0.5, seed + 1)
    return raw


def _apply(preprocess: Preprocess, images: np.ndarray | list[np.ndarray], name: str, split: str) -> np.ndarray:
    try:
        return preprocess.apply(images)
    except BadDataError as exc:
        raise BadDataError(f"dataset '{name}' ({split}): {exc}") from None


def _preprocessed(raw: dict[str, np.ndarray], preprocess: Preprocess, name: str) -> dict[str, np.ndarray]:
    """Raw arrays -> model inputs (labels untouched)."""
    return {key: _apply(preprocess, value, name, key[2:]) if key.startswith("x_") and len(value) else value
            for key, value in raw.items()}


def _labels(labels: Labels, num_classes: int | None, name: str, split: str) -> Labels:
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise BadDataError(f"labels of dataset '{name}' ({split}) must be 1-D, got shape {labels.shape}")
    if labels.dtype.kind == "U":
        return labels
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating) or not np.all(np.mod(labels, 1) == 0):
            raise BadDataError(f"labels of dataset '{name}' ({split}) must be integers or strings, "
                               f"got dtype {labels.dtype}")
    low, high = labels.min(), labels.max()
    if low < 0 or (num_classes is not None and high >= num_classes):
        bound = f"[0, {num_classes})" if num_classes is not None else "[0, ...)"
        raise BadDataError(f"dataset '{name}' ({split}) has labels {low:g}..{high:g}, outside {bound}"
                           + (f" (the model has {num_classes} outputs)" if num_classes is not None else ""))
    return labels.astype(np.int64)


# ---------------------------------------------------------------- sources

def _digits() -> dict[str, np.ndarray]:
    """scikit-learn's 8x8 handwritten digits (values 0..16): a fixed stratified 80/20 split,
    the 20% then halved (stratified, fixed) into val and test."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, labels = bunch.images.astype(np.float32), bunch.target.astype(np.int64)
    raw = {"x_train": images, "y_train": labels}
    _divide(raw, "train", "val", DIGITS_VAL_FRACTION, DIGITS_SPLIT_SEED)
    _divide(raw, "val", "test", 0.5, DIGITS_SPLIT_SEED)
    return raw


def _npz(path: Path) -> dict[str, np.ndarray]:
    if not zipfile.is_zipfile(path):
        raise BadDataError(f"{path} is not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as exc:  # object arrays need pickle, which we never allow
        raise BadDataError(f"cannot read {path}: {first_line(exc)}") from None
    except Exception as exc:
        raise BadDataError(f"{path} is not a readable .npz file ({type(exc).__name__})") from None
    if "x" in arrays and "x_train" not in arrays:
        arrays["x_train"] = arrays.pop("x")
    if "x_train" not in arrays:
        raise BadDataError(f"{path} has no x_train (or x) array (keys: {', '.join(sorted(arrays)) or 'none'})")
    for split in SPLITS:
        if f"y_{split}" in arrays and f"x_{split}" not in arrays:
            raise BadDataError(f"{path} has y_{split} but no x_{split}")
    known = {f"{axis}_{split}" for axis in "xy" for split in SPLITS} | {NPZ_UNLABELED}
    unknown = sorted(set(arrays) - known)
    if unknown:
        raise BadDataError(f"{path} has unknown arrays {', '.join(unknown)} (expected x_train, y_train, x_val, "
                           f"y_val, x_test, y_test, {NPZ_UNLABELED}, or x)")
    return arrays


def _class_index(names: list[str]) -> dict[str, int]:
    """Numeric folder names are the class index itself; otherwise sorted names are numbered."""
    if all(name.isdigit() for name in names):
        return {name: int(name) for name in names}
    return {name: index for index, name in enumerate(sorted(names))}


def _images_below(folder: Path, recursive: bool) -> list[Path]:
    files = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(f for f in files if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def _text_labels(folder: Path) -> tuple[list[Path], np.ndarray]:
    """`labels.tsv` of a folder: (files, texts), in the file's order."""
    files, texts = [], []
    table = folder / LABELS_FILE
    for number, line in enumerate(table.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        relative, tab, text = line.partition("\t")
        if not tab:
            raise BadDataError(f"{table}:{number}: expected 'file<TAB>text', got {line[:60]!r}")
        file = folder / relative
        if not file.is_file():
            raise BadDataError(f"{table}:{number}: no such image {relative}")
        files.append(file)
        texts.append(text)
    if not files:
        raise BadDataError(f"{table} lists no images")
    return files, np.array(texts, dtype=str)


def _class_files(class_dirs: list[Path], index: dict[str, int]) -> tuple[list[Path], np.ndarray]:
    """The images directly in each class folder, with their class indices."""
    pairs = [(file, index[folder.name]) for folder in class_dirs for file in _images_below(folder, recursive=False)]
    return [file for file, _ in pairs], np.array([label for _, label in pairs], dtype=np.int64)


def _directory(root: Path, preprocess: Preprocess) -> dict[str, np.ndarray | None]:
    split_dirs = {split: root / split for split in SPLITS if (root / split).is_dir()}
    if split_dirs and "train" not in split_dirs:
        raise BadDataError(f"{root} has {'/'.join(split_dirs)}/ but no train/ folder")
    data: dict[str, np.ndarray | None] = {}
    if not split_dirs:  # one pool, split later: texts, classes, or no labels
        class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and d.name != UNLABELED)
        if (root / LABELS_FILE).is_file():
            files, data["y_train"] = _text_labels(root)
        elif class_dirs and not _images_below(root, recursive=False):
            files, data["y_train"] = _class_files(class_dirs, _class_index([d.name for d in class_dirs]))
        else:
            files = [f for f in _images_below(root, recursive=True) if UNLABELED not in f.relative_to(root).parts]
        if not files:
            raise BadDataError(f"{root} holds no images (expected {_EXPECTED})")
        data["x_train"] = _read_images(files, preprocess, root.name, "train")
    else:
        class_names = sorted({d.name for folder in split_dirs.values() for d in folder.iterdir() if d.is_dir()})
        index = _class_index(class_names)
        for split, folder in split_dirs.items():
            if (folder / LABELS_FILE).is_file():
                files, data[f"y_{split}"] = _text_labels(folder)
            elif class_names:
                files, data[f"y_{split}"] = _class_files(sorted(d for d in folder.iterdir() if d.is_dir()), index)
            else:
                files = _images_below(folder, recursive=True)
            data[f"x_{split}"] = _read_images(files, preprocess, root.name, split)
    if (root / UNLABELED).is_dir():
        data[NPZ_UNLABELED] = _read_images(_images_below(root / UNLABELED, recursive=True), preprocess, root.name,
                                             UNLABELED)
    return data


def _read_images(files: list[Path], preprocess: Preprocess, name: str, split: str) -> np.ndarray:
    """Decode each file with Pillow (RGB, or gray for gray files and 1-channel models) and
    preprocess it at once, so that only model-sized arrays are held: the preprocessing resizes
    (stretched or padded) and brings the channels to the model's."""
    from PIL import Image

    if not files:
        return np.empty((0,), dtype=np.float32)
    out = []
    for file in files:
        try:
            with Image.open(file) as image:
                gray = preprocess.channels == 1 or image.mode in ("L", "1", "I;16")
                pixels = np.asarray(image.convert("L" if gray else "RGB"))
        except Exception as exc:
            raise BadDataError(f"cannot read image {file} ({type(exc).__name__})") from None
        out.append(_apply(preprocess, pixels[None], name, split))
    return np.concatenate(out)
