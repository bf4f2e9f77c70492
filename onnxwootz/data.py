"""Datasets as preprocessed numpy arrays: the bundled digits task, ImageFolder directories and
.npz files, checked against the model (labels, channels) with one clear error line each.

Besides labelled train/val splits a dataset may carry unlabeled images (npz key `x_unlabeled`,
or an `unlabeled/` folder): block pre-training imitates the teacher's tensors and needs no
labels, so any images from the task's domain make the blocks generalize better."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from onnxwootz.errors import BadDataError
from onnxwootz.preprocess import Preprocess

DIGITS = "digits"
DIGITS_VAL_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
"""The digits split never depends on the caller's seed: the bundled teacher's recorded accuracy
is measured on this exact validation set, and its training images must stay out of it."""

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
NPZ_KEYS = ("x_train", "y_train", "x_val", "y_val")
NPZ_UNLABELED = "x_unlabeled"
_EXPECTED = f"'{DIGITS}', an ImageFolder directory (train/<class>/*.png, val/<class>/...) or an .npz file"


@dataclass
class Dataset:
    """Preprocessed float32 NCHW images and int64 labels (the model's output indices)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    classes: int
    name: str
    x_unlabeled: np.ndarray | None = None

    @property
    def x_inputs(self) -> np.ndarray:
        """Every image without its label: what label-free (teacher-student) training may use."""
        if self.x_unlabeled is None or len(self.x_unlabeled) == 0:
            return self.x_train
        return np.concatenate([self.x_train, self.x_unlabeled])


def load_dataset(spec: str, preprocess: Preprocess, num_classes: int, seed: int = 0) -> Dataset:
    """Load `spec` ('digits', an ImageFolder directory or an .npz file) for a model with
    `num_classes` outputs. `seed` only splits a directory that has no val/ folder."""
    if num_classes <= 0:
        raise BadDataError(f"the model must have at least one output class, got {num_classes}")
    if spec == DIGITS:
        raw = _digits()
    else:
        path = Path(spec)
        if not path.exists():
            if path.suffix or len(path.parts) > 1:
                raise BadDataError(f"dataset path not found: {spec}")
            raise BadDataError(f"unknown dataset '{spec}' (expected {_EXPECTED})")
        if path.is_dir():
            raw = _image_folder(path, preprocess, seed)
        elif path.suffix.lower() == ".npz":
            raw = _npz(path)
        else:
            raise BadDataError(f"not a dataset: {spec} (expected {_EXPECTED})")
    name = DIGITS if spec == DIGITS else Path(spec).name
    splits = {}
    for split in ("train", "val"):
        images, labels = raw[f"x_{split}"], raw[f"y_{split}"]
        if len(images) == 0:
            raise BadDataError(f"the {split} split of dataset '{name}' is empty")
        if len(images) != len(labels):
            raise BadDataError(
                f"the {split} split of dataset '{name}' has {len(images)} images but {len(labels)} labels"
            )
        splits[f"x_{split}"] = _apply(preprocess, images, name, split)
        splits[f"y_{split}"] = _labels(labels, num_classes, name, split)
    unlabeled = raw.get(NPZ_UNLABELED)
    if unlabeled is not None and len(unlabeled):
        splits[NPZ_UNLABELED] = _apply(preprocess, unlabeled, name, "unlabeled")
    return Dataset(**splits, classes=num_classes, name=name)


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


def _apply(preprocess: Preprocess, images: np.ndarray, name: str, split: str) -> np.ndarray:
    try:
        return preprocess.apply(images)
    except BadDataError as exc:
        raise BadDataError(f"dataset '{name}' ({split}): {exc}") from None


def _labels(labels: np.ndarray, num_classes: int, name: str, split: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise BadDataError(f"labels of dataset '{name}' ({split}) must be 1-D, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating) or not np.all(np.mod(labels, 1) == 0):
            raise BadDataError(f"labels of dataset '{name}' ({split}) must be integers, got dtype {labels.dtype}")
    low, high = labels.min(), labels.max()
    if low < 0 or high >= num_classes:
        raise BadDataError(
            f"dataset '{name}' ({split}) has labels {low:g}..{high:g}, outside [0, {num_classes})"
            f" (the model has {num_classes} outputs)"
        )
    return labels.astype(np.int64)


def _digits() -> dict[str, np.ndarray]:
    """scikit-learn's 8x8 handwritten digits (values 0..16), a fixed stratified 80/20 split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, labels = bunch.images.astype(np.float32), bunch.target.astype(np.int64)
    train, val = _stratified_split(labels, DIGITS_VAL_FRACTION, DIGITS_SPLIT_SEED)
    return {"x_train": images[train], "y_train": labels[train], "x_val": images[val], "y_val": labels[val]}


def _stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val), each sorted, with every class split in the same proportion."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = int(round(len(members) * val_fraction))
        val.append(members[:count])
        train.append(members[count:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def _npz(path: Path) -> dict[str, np.ndarray]:
    if not zipfile.is_zipfile(path):
        raise BadDataError(f"{path} is not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise BadDataError(f"{path} lacks {', '.join(missing)} (needs {', '.join(NPZ_KEYS)})")
            return {key: archive[key] for key in (*NPZ_KEYS, NPZ_UNLABELED) if key in archive.files}
    except BadDataError:
        raise
    except ValueError as exc:  # object arrays need pickle, which we never allow
        raise BadDataError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    except Exception as exc:
        raise BadDataError(f"{path} is not a readable .npz file ({type(exc).__name__})") from None


def _class_index(names: list[str]) -> dict[str, int]:
    """Numeric folder names are the class index itself; otherwise sorted names are numbered."""
    if all(name.isdigit() for name in names):
        return {name: int(name) for name in names}
    return {name: index for index, name in enumerate(sorted(names))}


def _image_folder(root: Path, preprocess: Preprocess, seed: int) -> dict[str, np.ndarray]:
    split_dirs = {split: root / split for split in ("train", "val") if (root / split).is_dir()}
    if "train" not in split_dirs:
        raise BadDataError(f"{root} has no train/ folder (expected train/<class>/*.png and val/<class>/...)")
    names = sorted({d.name for split_dir in split_dirs.values() for d in split_dir.iterdir() if d.is_dir()})
    index = _class_index(names)
    data: dict[str, np.ndarray] = {}
    for split, split_dir in split_dirs.items():
        files = [
            (file, index[class_dir.name])
            for class_dir in sorted(d for d in split_dir.iterdir() if d.is_dir())
            for file in sorted(class_dir.iterdir())
            if file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES
        ]
        data[f"x_{split}"] = _read_images([file for file, _ in files], preprocess)
        data[f"y_{split}"] = np.array([label for _, label in files], dtype=np.int64)
    if "val" not in split_dirs:
        if len(data["y_train"]) == 0:
            raise BadDataError(f"the train split of dataset '{root.name}' is empty")
        train, val = _stratified_split(data["y_train"], DIGITS_VAL_FRACTION, seed)
        images, labels = data["x_train"], data["y_train"]
        data = {"x_train": images[train], "y_train": labels[train], "x_val": images[val], "y_val": labels[val]}
    if (root / "unlabeled").is_dir():
        files = sorted(f for f in (root / "unlabeled").rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        data[NPZ_UNLABELED] = _read_images(files, preprocess)
    return data


def _read_images(files: list[Path], preprocess: Preprocess) -> np.ndarray:
    """Decode with Pillow to gray (1-channel models) or RGB, resized to the model's size so
    that images of any size stack into one NHWC uint8 array."""
    from PIL import Image

    height, width = preprocess.size
    mode = "L" if preprocess.channels == 1 else "RGB"
    channels = 1 if mode == "L" else 3
    out = np.empty((len(files), height, width, channels), dtype=np.uint8)
    for position, file in enumerate(files):
        try:
            with Image.open(file) as image:
                image = image.convert(mode)
                if image.size != (width, height):
                    image = image.resize((width, height), Image.Resampling.BILINEAR)
                out[position] = np.asarray(image).reshape(height, width, channels)
        except Exception as exc:
            raise BadDataError(f"cannot read image {file} ({type(exc).__name__})") from None
    return out
