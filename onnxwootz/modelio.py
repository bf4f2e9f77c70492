"""Loading and saving ONNX models safely: external data that stays inside the model's folder,
validation, opset canonicalization, concrete shapes for analysis, atomic writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import external_data_helper, shape_inference, version_converter

from onnxwootz.atomic import write_bytes
from onnxwootz.errors import BadModelError, BadSpecError, first_line

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


def onnx_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return 1


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
    """Convert with onnx's version converter; IR version follows so initializers need not be inputs."""
    try:
        converted = version_converter.convert_version(model, opset)
    except Exception as exc:
        raise BadModelError(f"cannot convert the model from opset {onnx_opset(model)} to {opset}: {exc}") from None
    converted.ir_version = max(converted.ir_version, 7)
    return converted


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


FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


def _copy_fields(source, target, skip: str) -> None:
    """Copy every set field of a protobuf message except `skip` (no deep copy of that one)."""
    for field, value in source.ListFields():
        if field.name == skip:
            continue
        if hasattr(value, "extend"):  # a repeated field
            getattr(target, field.name).extend(value)
        elif field.message_type is not None:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)


def skeleton(model: onnx.ModelProto, keep) -> onnx.ModelProto:
    """A copy of the model with only the initializers `keep` accepts: cheap whatever the size."""
    out = onnx.ModelProto()
    _copy_fields(model, out, "graph")
    _copy_fields(model.graph, out.graph, "initializer")
    out.graph.initializer.extend(init for init in model.graph.initializer if keep(init))
    return out


def without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its large float initializers (weights) turned into typed graph inputs
    (shape, no data); small ones (shape constants, Resize scales) keep their values. Checking
    and shape inference on it cost the same as on the full model minus serializing the weights."""
    weight = lambda init: init.data_type in FLOAT_TYPES and int(np.prod(init.dims)) > 64  # noqa: E731
    probe = skeleton(model, lambda init: not weight(init))
    declared = {value.name for value in probe.graph.input}
    for init in model.graph.initializer:
        if weight(init) and init.name not in declared:
            probe.graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return probe


def parse_input_shape(text: str | None) -> list[int] | None:
    """'1,3,224,224' -> [1, 3, 224, 224]."""
    if text is None:
        return None
    try:
        dims = [int(part) for part in text.replace("x", ",").split(",") if part.strip()]
    except ValueError:
        raise BadSpecError(f"--input-shape must be comma-separated integers, got '{text}'") from None
    if not dims or any(d <= 0 for d in dims):
        raise BadSpecError(f"--input-shape must be positive integers, got '{text}'")
    return dims


def initializer_names(model: onnx.ModelProto) -> set[str]:
    return {init.name for init in model.graph.initializer}


def real_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers (old IR lists weights as inputs too)."""
    inits = initializer_names(model)
    return [value for value in model.graph.input if value.name not in inits]


def static_dims(value: onnx.ValueInfoProto) -> list[int | None]:
    """A value's declared dims, None where dynamic (a dim_param, or 0/unset)."""
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in value.type.tensor_type.shape.dim]


def input_shapes(model: onnx.ModelProto, input_shape: Sequence[int] | None = None) -> dict[str, list[int]]:
    """Concrete shapes for the real inputs: dynamic dims become 1 (batch) or come from
    `input_shape` (for the first input); an unresolvable dim is a clear error."""
    shapes: dict[str, list[int]] = {}
    for index, value in enumerate(real_inputs(model)):
        dims = value.type.tensor_type.shape.dim
        concrete = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in dims]
        if index == 0 and input_shape is not None:
            if len(input_shape) != len(concrete):
                raise BadSpecError(
                    f"--input-shape has {len(input_shape)} dims but input '{value.name}' has {len(concrete)}"
                )
            concrete = list(input_shape)
        if concrete and concrete[0] == -1:
            concrete[0] = 1
        if any(d < 0 for d in concrete):
            raise BadSpecError(
                f"input '{value.name}' has dynamic dims {concrete}; pass --input-shape, e.g. 1,3,224,224"
            )
        shapes[value.name] = concrete
    return shapes


def dummy_feed(model: onnx.ModelProto, shapes: dict[str, list[int]], seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs of the right dtype for running a model (tests, shape discovery, bench)."""
    rng = np.random.default_rng(seed)
    feed = {}
    for value in real_inputs(model):
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        shape = shapes[value.name]
        if np.issubdtype(dtype, np.floating):
            feed[value.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feed[value.name] = rng.integers(0, 2, size=shape).astype(dtype)
    return feed


def has_schema(node: onnx.NodeProto) -> bool:
    """Whether onnx knows the op (and so shape inference and the reference evaluator do)."""
    return onnx.defs.has(node.op_type, "" if node.domain in ("", "ai.onnx") else node.domain)


def _concrete_dims(value: onnx.ValueInfoProto, sizes: dict[str, int]) -> list[int] | None:
    """A declared shape with its symbolic dims resolved by the graph inputs' dim names."""
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    dims = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value > 0:
            dims.append(dim.dim_value)
        elif dim.dim_param in sizes:
            dims.append(sizes[dim.dim_param])
        else:
            return None
    return dims


def set_dims(value: onnx.ValueInfoProto, dims: list[int]) -> None:
    """Declare a value's shape as these concrete dims."""
    shape = value.type.tensor_type.shape
    del shape.dim[:]
    for size in dims:
        shape.dim.add().dim_value = size


def static_shapes(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> dict[str, list[int]]:
    """Shape of every tensor for concrete input shapes: onnx shape inference with data
    propagation, and ONNX Runtime on a dummy input for whatever inference leaves open. Outputs
    of ops onnx does not know (custom domains) keep the shapes the model declares for them, so
    inference goes on past them; ONNX Runtime then runs only what does not depend on an
    undeclared one. A tensor whose shape nothing can tell is left out (the analysis makes it a
    barrier)."""
    fixed = without_weights(model)
    sizes = {}
    for value in fixed.graph.input:
        if value.name in shapes:
            for dim, size in zip(value.type.tensor_type.shape.dim, shapes[value.name]):
                if dim.dim_param:
                    sizes[dim.dim_param] = size
            set_dims(value, shapes[value.name])
    foreign = {out for node in model.graph.node if not has_schema(node) for out in node.output}
    declared = []
    for value in fixed.graph.value_info:
        dims = _concrete_dims(value, sizes) if value.name in foreign else None
        if dims is not None:
            set_dims(value, dims)
            declared.append(value)
    del fixed.graph.value_info[:]
    fixed.graph.value_info.extend(declared)
    try:
        inferred = shape_inference.infer_shapes(fixed, data_prop=True)
    except Exception:
        inferred = fixed
    result: dict[str, list[int]] = {}
    elem_types: dict[str, int] = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
        if all(d >= 0 for d in dims):
            result[value.name] = dims
            elem_types[value.name] = tensor_type.elem_type
    for init in model.graph.initializer:
        result[init.name] = list(init.dims)
    missing = [out for node in model.graph.node for out in node.output if out and out not in result]
    if missing:
        result.update(_shapes_by_running(model, shapes, missing, result, elem_types))
    return result


def _shapes_by_running(model: onnx.ModelProto, shapes: dict[str, list[int]], names: list[str],
                       known: dict[str, list[int]], elem_types: dict[str, int]) -> dict[str, list[int]]:
    """Shapes of `names` from ONNX Runtime on a dummy input. When the whole model does not run
    (an op without a kernel), the nodes onnx does not know are cut out: their outputs with a
    known shape and type become inputs fed with dummies, and what depends on the others is
    left out."""
    try:
        return _run_for_shapes(model, shapes, names)
    except Exception as exc:
        if all(has_schema(node) for node in model.graph.node):
            raise BadModelError(f"cannot determine tensor shapes (ONNX Runtime: {first_line(exc)})") from None
    cut = skeleton(model, lambda init: True)
    del cut.graph.node[:]
    del cut.graph.output[:]
    available = {value.name for value in model.graph.input} | initializer_names(model)
    cut_shapes = dict(shapes)
    for node in model.graph.node:
        if not has_schema(node):
            for out in node.output:
                if out in known and out in elem_types:
                    cut.graph.input.append(onnx.helper.make_tensor_value_info(out, elem_types[out], known[out]))
                    cut_shapes[out] = known[out]
                    available.add(out)
        elif all(not name or name in available for name in node.input):
            cut.graph.node.append(node)
            available.update(out for out in node.output if out)
    reachable = [name for name in names if name in available and name not in cut_shapes]
    if not reachable:
        return {}
    try:
        return _run_for_shapes(cut, cut_shapes, reachable)
    except Exception as exc:
        raise BadModelError(f"cannot determine tensor shapes (ONNX Runtime: {first_line(exc)})") from None


def _run_for_shapes(model: onnx.ModelProto, shapes: dict[str, list[int]], names: list[str]) -> dict[str, list[int]]:
    from onnxwootz.runtime.sessions import cpu_session

    probe = skeleton(model, lambda init: True)
    for value in probe.graph.input:
        if value.name in shapes:
            set_dims(value, shapes[value.name])
    known_outputs = {out.name for out in probe.graph.output}
    for name in names:
        if name not in known_outputs:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    values = cpu_session(probe).run(names, dummy_feed(probe, shapes))
    return {name: list(np.shape(value)) for name, value in zip(names, values)}
