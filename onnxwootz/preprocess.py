"""The preprocessing contract a model carries in its ONNX metadata, so that every tool that feeds
it images (training, evaluation, benchmarks) turns raw pixels into the same input tensor.

Key `onnxwootz.preprocess` holds `{"size": [H, W], "channels": C, "scale": s, "mean": [...],
"std": [...]}`: multiply by scale, resize (bilinear) to HxW, bring to C channels, subtract
mean, divide by std (per channel; lists of length C or 1). Key `onnxwootz.dataset` names the
dataset the model was trained on, `onnxwootz.accuracy` its validation accuracy (a fraction)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import onnx

from onnxwootz.errors import BadDataError, BadSpecError

PREPROCESS_KEY = "onnxwootz.preprocess"
DATASET_KEY = "onnxwootz.dataset"
ACCURACY_KEY = "onnxwootz.accuracy"

_FIELDS = ("size", "channels", "scale", "mean", "std")
_GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""ITU-R 601 luma, as Pillow's RGB -> L conversion, for feeding colour images to a gray model."""


def get_metadata(model: onnx.ModelProto, key: str) -> str | None:
    for entry in model.metadata_props:
        if entry.key == key:
            return entry.value
    return None


def set_metadata(model: onnx.ModelProto, key: str, value: str) -> None:
    """Set or replace one metadata entry (ONNX allows duplicates; we never write them)."""
    kept = [entry for entry in model.metadata_props if entry.key != key]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=key, value=value)


def dataset_of(model: onnx.ModelProto) -> str | None:
    """The dataset spec the model was trained on (e.g. 'digits'), if it says."""
    value = (get_metadata(model, DATASET_KEY) or "").strip()
    return value or None


def accuracy_of(model: onnx.ModelProto) -> float | None:
    """The validation accuracy recorded in the model (a fraction), if any."""
    value = get_metadata(model, ACCURACY_KEY)
    if value is None:
        return None
    try:
        accuracy = float(value)
    except ValueError:
        raise BadSpecError(f"metadata '{ACCURACY_KEY}' must be a number, got '{value}'") from None
    if not 0.0 <= accuracy <= 1.0:
        raise BadSpecError(f"metadata '{ACCURACY_KEY}' must be a fraction in [0, 1], got {value}")
    return accuracy


def _number_list(name: str, value: object, channels: int) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or len(value) not in (1, channels):
        raise BadSpecError(f"preprocess '{name}' must be a list of 1 or {channels} numbers, got {value!r}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise BadSpecError(f"preprocess '{name}' must hold finite numbers, got {value!r}")
    return tuple(float(v) for v in value)


@dataclass(frozen=True)
class Preprocess:
    """How raw images become the model's float32 NCHW input."""

    size: tuple[int, int]
    channels: int
    scale: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        size, channels, scale = self.size, self.channels, self.scale
        if not (isinstance(size, (list, tuple)) and len(size) == 2
                and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
            raise BadSpecError(f"preprocess 'size' must be [H, W] with positive integers, got {size!r}")
        if not isinstance(channels, int) or isinstance(channels, bool) or channels <= 0:
            raise BadSpecError(f"preprocess 'channels' must be a positive integer, got {channels!r}")
        if (not isinstance(scale, (int, float)) or isinstance(scale, bool)
                or not math.isfinite(scale) or scale == 0):
            raise BadSpecError(f"preprocess 'scale' must be a finite non-zero number, got {scale!r}")
        std = _number_list("std", self.std, channels)
        if any(s == 0 for s in std):
            raise BadSpecError(f"preprocess 'std' must not contain zero, got {list(std)}")
        object.__setattr__(self, "size", (size[0], size[1]))
        object.__setattr__(self, "scale", float(scale))
        object.__setattr__(self, "mean", _number_list("mean", self.mean, channels))
        object.__setattr__(self, "std", std)

    @classmethod
    def from_json(cls, text: str) -> Preprocess:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadSpecError(f"metadata '{PREPROCESS_KEY}' is not valid JSON ({exc.msg})") from None
        if not isinstance(raw, dict):
            raise BadSpecError(f"metadata '{PREPROCESS_KEY}' must be a JSON object, got {type(raw).__name__}")
        missing = [field for field in _FIELDS if field not in raw]
        unknown = sorted(set(raw) - set(_FIELDS))
        if missing:
            raise BadSpecError(f"metadata '{PREPROCESS_KEY}' lacks {', '.join(missing)}")
        if unknown:
            raise BadSpecError(f"metadata '{PREPROCESS_KEY}' has unknown keys {', '.join(unknown)}")
        return cls(**{field: raw[field] for field in _FIELDS})

    @classmethod
    def from_model(cls, model: onnx.ModelProto) -> Preprocess | None:
        """The contract the model carries, or None when it has none."""
        text = get_metadata(model, PREPROCESS_KEY)
        return None if text is None else cls.from_json(text)

    def to_json(self) -> str:
        return json.dumps({"size": list(self.size), "channels": self.channels, "scale": self.scale,
                           "mean": list(self.mean), "std": list(self.std)})

    def write_to(self, model: onnx.ModelProto) -> None:
        set_metadata(model, PREPROCESS_KEY, self.to_json())

    def apply(self, images: np.ndarray) -> np.ndarray:
        """NHW, NHWC or NCHW images (any numeric dtype) -> float32 NCHW model input.
        A 4-D array is channels-first when its axis 1 looks like channels (1, 3 or C) and
        its last axis does not; otherwise channels-last."""
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[:, None]
        elif images.ndim == 4:
            if not self._channels_first(images.shape):
                images = images.transpose(0, 3, 1, 2)
        else:
            raise BadDataError(
                f"images must be NHW, NHWC or NCHW (rank 3 or 4), got shape {tuple(images.shape)}"
            )
        if images.shape[0] == 0:
            raise BadDataError("no images to preprocess")
        if not (np.issubdtype(images.dtype, np.number) or images.dtype == np.bool_):
            raise BadDataError(f"images must be numeric, got dtype {images.dtype}")
        x = images.astype(np.float32) * np.float32(self.scale)
        x = _resize_bilinear(x, self.size)
        x = self._to_channels(x)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(1, -1, 1, 1)
        return np.ascontiguousarray((x - mean) / std, dtype=np.float32)

    def _channels_first(self, shape: tuple[int, ...]) -> bool:
        allowed = {1, 3, self.channels}
        first, last = shape[1] in allowed, shape[-1] in allowed
        if first != last:
            return first
        if not first:
            raise BadDataError(
                f"images of shape {tuple(shape)} have no channel axis of size 1, 3 or {self.channels}"
            )
        return True

    def _to_channels(self, x: np.ndarray) -> np.ndarray:
        have = x.shape[1]
        if have == self.channels:
            return x
        if have == 1:
            return np.repeat(x, self.channels, axis=1)
        if have == 3 and self.channels == 1:
            return np.einsum("nchw,c->nhw", x, _GRAY_WEIGHTS)[:, None]
        raise BadDataError(f"images have {have} channels; the model takes {self.channels} (give 1, 3 or {self.channels})")


@lru_cache(maxsize=64)
def _resize_matrix(source: int, target: int) -> np.ndarray:
    """(target, source) weights of Pillow-style bilinear resampling: half-pixel centres and a
    triangle filter widened by the scale when shrinking (antialiasing); for enlarging it equals
    the usual align_corners=False bilinear with edge clamping."""
    ratio = source / target
    support = max(ratio, 1.0)
    centers = (np.arange(target) + 0.5) * ratio
    positions = np.arange(source) + 0.5
    weights = np.clip(1.0 - np.abs(positions[None, :] - centers[:, None]) / support, 0.0, None)
    weights = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
    weights.flags.writeable = False
    return weights


def _resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    height, width = size
    if x.shape[2:] == (height, width):
        return x
    rows = _resize_matrix(x.shape[2], height)
    cols = _resize_matrix(x.shape[3], width)
    return np.matmul(np.matmul(rows, x), cols.T)
