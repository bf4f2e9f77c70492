"""The preprocessing contract a model carries in its ONNX metadata, so that every tool that feeds
it images (training, evaluation, benchmarks) turns raw pixels into the same input tensor.

Key `onnxwootz.preprocess` holds `{"size": [H, W], "channels": C, "scale": s, "mean": [...],
"std": [...], "order": "RGB"|"BGR", "resize": "stretch"|"pad"}`: multiply by scale, resize
(bilinear) to HxW, bring to C channels, put them in `order` (images are read as RGB), subtract
mean, divide by std (per channel; lists of length C or 1). `resize: "pad"` keeps the aspect
ratio instead (PaddleOCR's recognizer and classifier): the image is resized to height H and at
most width W, left-aligned, and the rest is 0 after normalization. `order` and `resize` are
optional (RGB, stretch). Key `onnxwootz.dataset` names the dataset the model was trained on,
`onnxwootz.accuracy` its validation accuracy (a fraction).

A model that carries no contract (any third-party export) gets one from the user: a preset
(`imagenet`, `unit` for x/255, `none` for arrays that already are model inputs) or the JSON
object, whose missing size and channels come from the model's static input shape or from
`--input-shape` (`resolve_preprocess`)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx

from onnxwootz.core.errors import BadDataError, BadSpecError
from onnxwootz.core.onnx_helpers import real_inputs, static_dims

PREPROCESS_KEY = "onnxwootz.preprocess"
DATASET_KEY = "onnxwootz.dataset"
ACCURACY_KEY = "onnxwootz.accuracy"

_FIELDS = ("size", "channels", "scale", "mean", "std")
_OPTIONAL_FIELDS = ("order", "resize")
ORDERS = ("RGB", "BGR")
RESIZES = ("stretch", "pad")
_GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""ITU-R 601 luma, as Pillow's RGB -> L conversion, for feeding colour images to a gray model."""
PRESETS: dict[str, dict[str, object]] = {
    "imagenet": {"channels": 3, "scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "unit": {"scale": 1 / 255, "mean": [0.0], "std": [1.0]},
}
"""Named preprocessings for `--preprocess` (torchvision's ImageNet normalization; plain x/255).
`none` (arrays that already are model inputs) is the passthrough contract, not a preset."""
PASSTHROUGH = "none"


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
    """How raw images become the model's float32 NCHW input (`passthrough`: the data already is
    model input, checked for rank and cast to float32 only)."""

    size: tuple[int, int] | None
    channels: int
    scale: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    order: str = "RGB"
    resize: str = "stretch"
    passthrough: bool = False

    def __post_init__(self) -> None:
        size, channels, scale = self.size, self.channels, self.scale
        if not (size is None and self.passthrough) and not (
                isinstance(size, (list, tuple)) and len(size) == 2
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
        if self.order not in ORDERS:
            raise BadSpecError(f"preprocess 'order' must be 'RGB' or 'BGR', got {self.order!r}")
        if self.resize not in RESIZES:
            raise BadSpecError(f"preprocess 'resize' must be 'stretch' or 'pad', got {self.resize!r}")
        if size is not None:
            object.__setattr__(self, "size", (size[0], size[1]))
        object.__setattr__(self, "scale", float(scale))
        object.__setattr__(self, "mean", _number_list("mean", self.mean, channels))
        object.__setattr__(self, "std", std)

    @classmethod
    def from_dict(cls, raw: object, where: str = f"metadata '{PREPROCESS_KEY}'") -> Preprocess:
        if not isinstance(raw, dict):
            raise BadSpecError(f"{where} must be a JSON object, got {type(raw).__name__}")
        missing = [field for field in _FIELDS if field not in raw]
        unknown = sorted(set(raw) - set(_FIELDS) - set(_OPTIONAL_FIELDS))
        if missing:
            raise BadSpecError(f"{where} lacks {', '.join(missing)}")
        if unknown:
            raise BadSpecError(f"{where} has unknown keys {', '.join(unknown)}")
        return cls(**{field: raw[field] for field in (*_FIELDS, *_OPTIONAL_FIELDS) if field in raw})

    @classmethod
    def from_json(cls, text: str) -> Preprocess:
        return cls.from_dict(_parse_json(text, f"metadata '{PREPROCESS_KEY}'"))

    @classmethod
    def from_model(cls, model: onnx.ModelProto) -> Preprocess | None:
        """The contract the model carries, or None when it has none."""
        text = get_metadata(model, PREPROCESS_KEY)
        return None if text is None else cls.from_json(text)

    def to_dict(self) -> dict[str, object]:
        if self.passthrough:
            return {"preset": PASSTHROUGH, "channels": self.channels}
        contract: dict[str, object] = {"size": list(self.size), "channels": self.channels, "scale": self.scale,
                                       "mean": list(self.mean), "std": list(self.std)}
        if self.order != "RGB":  # defaults left out: older readers, and older models, keep their exact form
            contract["order"] = self.order
        if self.resize != "stretch":
            contract["resize"] = self.resize
        return contract

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def write_to(self, model: onnx.ModelProto) -> None:
        """Record the contract in the model; a passthrough one records nothing (there is no
        transform to carry, and the model then asks for --preprocess none again)."""
        if not self.passthrough:
            set_metadata(model, PREPROCESS_KEY, self.to_json())

    def apply(self, images: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """Images -> float32 NCHW model input. `images` is one array (NHW, NHWC or NCHW, any
        numeric dtype; a 4-D array is channels-first when its axis 1 looks like channels (1, 3
        or C) and its last axis does not) or a list of HW / HWC arrays of any sizes (decoded
        files, RGB)."""
        if self.passthrough:
            return _passthrough(images)
        if isinstance(images, list):
            if not images:
                raise BadDataError("no images to preprocess")
            return np.concatenate([self.apply(np.asarray(image)[None]) for image in images])
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
        height, width = self.size
        fitted = width if self.resize == "stretch" else min(width, math.ceil(height * x.shape[3] / x.shape[2]))
        x = self._to_channels(_resize_bilinear(x, (height, fitted)))
        if self.order == "BGR" and x.shape[1] == 3:
            x = x[:, ::-1]
        mean = np.asarray(self.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(1, -1, 1, 1)
        x = (x - mean) / std
        if fitted < width:
            x = np.pad(x, ((0, 0), (0, 0), (0, 0), (0, width - fitted)))
        return np.ascontiguousarray(x, dtype=np.float32)

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


def _passthrough(images: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """Arrays that already are model inputs: stacked, checked, cast to float32, never changed."""
    try:
        x = np.stack(images) if isinstance(images, list) else np.asarray(images)
    except ValueError:
        raise BadDataError("--preprocess none needs arrays of one shape (they are fed to the model as they are)") from None
    if x.ndim < 2 or x.shape[0] == 0:
        raise BadDataError(f"--preprocess none needs a batch of model inputs, got shape {tuple(x.shape)}")
    if not np.issubdtype(x.dtype, np.number):
        raise BadDataError(f"model inputs must be numeric, got dtype {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _parse_json(text: str, where: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadSpecError(f"{where} is not valid JSON ({exc.msg})") from None


def _static_input_dims(model: onnx.ModelProto) -> list[int | None]:
    """The first real input's dims (None where dynamic), [] for a model without inputs."""
    inputs = real_inputs(model)
    return static_dims(inputs[0]) if inputs else []


def resolve_preprocess(value: str | None, model: onnx.ModelProto,
                       input_shape: list[int] | None = None) -> Preprocess | None:
    """The preprocessing to feed `model` with: `value` (a preset name, a JSON object, or the
    path of a .json file holding one) or, when None, the contract in the model's metadata
    (None when it has none). Size and channels the value leaves out come from `input_shape`,
    else from the model's static NCHW input; one clear error when neither knows them."""
    if value is None:
        return Preprocess.from_model(model)
    dims = list(input_shape) if input_shape else _static_input_dims(model)
    channels = dims[1] if len(dims) == 4 and dims[1] else None
    text = value.strip()
    if text == PASSTHROUGH:
        return Preprocess(size=None, channels=channels or 1, passthrough=True)
    if text in PRESETS:
        raw: dict[str, object] = dict(PRESETS[text])
    elif text.startswith("{"):
        raw = _as_dict(_parse_json(text, "--preprocess"))
    elif text.lower().endswith(".json"):
        path = Path(text)
        if not path.is_file():
            raise BadSpecError(f"--preprocess file not found: {text}")
        raw = _as_dict(_parse_json(path.read_text(encoding="utf-8"), f"--preprocess file {text}"))
    else:
        choices = ", ".join([*PRESETS, PASSTHROUGH])
        raise BadSpecError(f"--preprocess must be a preset ({choices}), a JSON object or a .json file, got '{value}'")
    raw.setdefault("channels", channels or 3)
    if "size" not in raw:
        if len(dims) != 4 or not dims[2] or not dims[3]:
            raise BadSpecError("the model's input height and width are dynamic: give \"size\": [H, W] in "
                               "--preprocess or pass --input-shape N,C,H,W")
        raw["size"] = [dims[2], dims[3]]
    raw.setdefault("mean", [0.0])
    raw.setdefault("std", [1.0])
    raw.setdefault("scale", 1.0)
    return Preprocess.from_dict(raw, "--preprocess")


def _as_dict(raw: object) -> dict[str, object]:
    if not isinstance(raw, dict):
        raise BadSpecError(f"--preprocess must be a JSON object, got {type(raw).__name__}")
    if raw.get("preset") == PASSTHROUGH:
        raise BadSpecError("write --preprocess none for arrays that already are model inputs")
    return dict(raw)


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
