"""Loading and saving ONNX models safely: external data that stays inside the model's folder,
validation, opset canonicalization, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import external_data_helper, version_converter

from onnxwootz.core import weightfile
from onnxwootz.core.atomic import open_atomic, write_bytes
from onnxwootz.core.errors import BadModelError, first_line
from onnxwootz.core.onnx_helpers import is_weight, onnx_opset, skeleton, without_weights

CANONICAL_OPSET = 13
"""Models older than this are converted up, so the passes see one form of Split/Squeeze/Pad."""

_EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def _check_external_locations(model: onnx.ModelProto, path: Path) -> None:
    """External data must lie in the model's folder. A weight reference (the lazy loader's)
    must point at the model file itself, the only file the loader refers to before this check:
    one that a file brought with it could point anywhere."""
    root, own = path.parent.resolve(), path.resolve()
    for tensor in external_data_helper._get_all_tensors(model):
        if weightfile.is_reference(tensor):
            if weightfile.location(tensor) != own:
                raise BadModelError(f"tensor '{tensor.name}' carries onnxwootz's internal weight-reference key "
                                    f"'{weightfile.STAMP}' pointing at another file")
            continue
        if not external_data_helper.uses_external_data(tensor):
            continue
        info = external_data_helper.ExternalDataInfo(tensor)
        location = Path(info.location)
        target = (root / location).resolve()
        if location.is_absolute() or (target != root and root not in target.parents):
            raise BadModelError(
                f"external data of tensor '{tensor.name}' points outside the model's folder: {info.location}"
            )
        if not target.is_file():
            raise BadModelError(f"external data file of tensor '{tensor.name}' is missing: {target}")


def load_model(path: str | os.PathLike[str], canonical_opset: bool = True, lazy: bool = False) -> onnx.ModelProto:
    """Load an ONNX file (with external data from its folder), validate it, and bring it to at
    least CANONICAL_OPSET. Every failure is a BadModelError with one clear line. `lazy` leaves
    the weights in their files (core/weightfile.py): for commands that read each weight once or
    twice and write a model, not for ones that run the model many times."""
    path = Path(path)
    if not path.exists():
        raise BadModelError(f"model file not found: {path}")
    if not path.is_file():
        raise BadModelError(f"not a file: {path}")
    try:
        model = weightfile.load(path) if lazy else onnx.load(str(path), load_external_data=False)
    except BadModelError:
        raise
    except Exception as exc:  # protobuf DecodeError and friends
        raise BadModelError(f"{path} is not a readable ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise BadModelError(f"{path} is not an ONNX model (its graph has no nodes)")
    _check_external_locations(model, path)
    try:
        if lazy:
            weightfile.refer_external(model, path.parent)
        else:
            external_data_helper.load_external_data_for_model(model, str(path.parent))
    except Exception as exc:
        raise BadModelError(f"cannot read the external data of {path}: {exc}") from None
    try:
        onnx.checker.check_model(without_weights(model))
    except Exception as exc:
        raise BadModelError(f"{path} is not a valid ONNX model: {first_line(exc)}") from None
    if canonical_opset and onnx_opset(model) < CANONICAL_OPSET:
        model = upgrade_opset(model, CANONICAL_OPSET)
    return model


def upgrade_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """Convert with onnx's version converter; IR version follows so initializers need not be
    inputs. The converter serializes the model it is given and parses what it returns, holding
    about four copies of it (VGG-19: 3.6 GB for a 575 MB file), so it gets the graph with each
    weight replaced by an external-data stub it never reads, and the weights come back after."""
    weights = {init.name: init for init in model.graph.initializer if is_weight(init)}
    light = skeleton(model, lambda init: False)
    for init in model.graph.initializer:
        if init.name in weights:
            light.graph.initializer.append(_detached(init))
        else:
            light.graph.initializer.append(init)
    try:
        converted = version_converter.convert_version(light, opset)
    except Exception as exc:
        raise BadModelError(f"cannot convert the model from opset {onnx_opset(model)} to {opset}: {exc}") from None
    for init in converted.graph.initializer:
        if _is_detached(init):
            if init.name not in weights:
                raise BadModelError(f"converting to opset {opset} renamed the weight behind '{init.name}'")
            init.CopyFrom(weights[init.name])
    converted.ir_version = max(converted.ir_version, 7)
    return converted


_DETACHED = "onnxwootz:detached"
"""The external-data location of a weight stub while the version converter runs."""


def _detached(init: onnx.TensorProto) -> onnx.TensorProto:
    stub = onnx.TensorProto(name=init.name, data_type=init.data_type, dims=init.dims,
                            data_location=onnx.TensorProto.EXTERNAL)
    stub.external_data.add(key="location", value=_DETACHED)
    return stub


def _is_detached(init: onnx.TensorProto) -> bool:
    return init.data_location == onnx.TensorProto.EXTERNAL and any(
        entry.key == "location" and entry.value == _DETACHED for entry in init.external_data)


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str], external: bool | None = None) -> Path:
    """Write atomically: a temporary file in the target folder, then a rename. With `external`
    (None: when the model is too large for one protobuf file) the weights go to `<name>.data`
    beside it, which is written and renamed first. Weights still in their source files
    (core/weightfile.py) are streamed from there."""
    path = Path(path)
    if external is None:
        external = weightfile.stored_size(model) > _EXTERNAL_DATA_THRESHOLD
    if external:
        data_name = path.name + ".data"
        with open_atomic(path.parent / data_name) as data:
            model = weightfile.write_external(model, data, data_name)
        return write_bytes(path, model.SerializeToString())
    with open_atomic(path) as handle:
        weightfile.write_embedded(model, handle)
    return path
