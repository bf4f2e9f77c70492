"""Loading and saving ONNX models safely: external data that stays inside the model's folder,
validation, opset canonicalization, atomic writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx
from onnx import external_data_helper, version_converter

from onnxwootz.core.atomic import write_bytes
from onnxwootz.core.errors import BadModelError, first_line
from onnxwootz.core.onnx_helpers import is_weight, onnx_opset, skeleton, without_weights

CANONICAL_OPSET = 13
"""Models older than this are converted up, so the passes see one form of Split/Squeeze/Pad."""

_EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def _check_external_locations(model: onnx.ModelProto, base: Path) -> None:
    root = base.resolve()
    for tensor in external_data_helper._get_all_tensors(model):
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


def load_model(path: str | os.PathLike[str], canonical_opset: bool = True) -> onnx.ModelProto:
    """Load an ONNX file (with external data from its folder), validate it, and bring it to at
    least CANONICAL_OPSET. Every failure is a BadModelError with one clear line."""
    path = Path(path)
    if not path.exists():
        raise BadModelError(f"model file not found: {path}")
    if not path.is_file():
        raise BadModelError(f"not a file: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise BadModelError(f"{path} is not a readable ONNX model ({type(exc).__name__})") from None
    if not model.graph.node:
        raise BadModelError(f"{path} is not an ONNX model (its graph has no nodes)")
    _check_external_locations(model, path.parent)
    try:
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


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str]) -> Path:
    """Write atomically: a temporary file in the target folder, then a rename. Large models put
    their weights in `<name>.data` beside the file (also written first, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    large = model.ByteSize() > _EXTERNAL_DATA_THRESHOLD
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if large:
            data_name = path.name + ".data"
            tmp_data = path.parent / (data_name + ".tmp")
            model = onnx.ModelProto.FromString(model.SerializeToString())
            onnx.save_model(model, tmp, save_as_external_data=True, location=tmp_data.name, all_tensors_to_one_file=True)
            # rewrite locations to the final data name, then move both into place
            reloaded = onnx.load(tmp, load_external_data=False)
            for tensor in external_data_helper._get_all_tensors(reloaded):
                for entry in tensor.external_data:
                    if entry.key == "location":
                        entry.value = data_name
            with open(tmp, "wb") as handle:
                handle.write(reloaded.SerializeToString())
            os.replace(tmp_data, path.parent / data_name)
        else:
            Path(tmp).unlink(missing_ok=True)
            return write_bytes(path, model.SerializeToString())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
