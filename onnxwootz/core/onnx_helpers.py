"""Small helpers over ONNX protos: opset, graph inputs and their shapes, weight-free copies for
cheap checks, dummy inputs. Pure onnx and numpy (no ONNX Runtime)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import onnx

from onnxwootz.core.errors import BadSpecError


def onnx_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return 1


FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


def copy_fields(source, target, skip: set[str]) -> None:
    """Copy every set field of a protobuf message (proto2, as ONNX's are) except those in
    `skip`, which are never read (reading a bytes field copies it)."""
    for field in source.DESCRIPTOR.fields:
        if field.name in skip:
            continue
        if field.is_repeated:
            if len(getattr(source, field.name)):
                getattr(target, field.name).extend(getattr(source, field.name))
        elif source.HasField(field.name):
            if field.message_type is not None:
                getattr(target, field.name).CopyFrom(getattr(source, field.name))
            else:
                setattr(target, field.name, getattr(source, field.name))


def skeleton(model: onnx.ModelProto, keep) -> onnx.ModelProto:
    """A copy of the model with only the initializers `keep` accepts: cheap whatever the size."""
    out = onnx.ModelProto()
    copy_fields(model, out, {"graph"})
    copy_fields(model.graph, out.graph, {"initializer"})
    out.graph.initializer.extend(init for init in model.graph.initializer if keep(init))
    return out


def is_weight(init: onnx.TensorProto) -> bool:
    """A large float initializer (a weight), as opposed to a shape constant or Resize scales."""
    return init.data_type in FLOAT_TYPES and math.prod(init.dims) > 64


def without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its large float initializers (weights) turned into typed graph inputs
    (shape, no data); small ones (shape constants, Resize scales) keep their values. Checking
    and shape inference on it cost the same as on the full model minus serializing the weights."""
    probe = skeleton(model, lambda init: not is_weight(init))
    declared = {value.name for value in probe.graph.input}
    for init in model.graph.initializer:
        if is_weight(init) and init.name not in declared:
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


def set_dims(value: onnx.ValueInfoProto, dims: list[int]) -> None:
    """Declare a value's shape as these concrete dims."""
    shape = value.type.tensor_type.shape
    del shape.dim[:]
    for size in dims:
        shape.dim.add().dim_value = size
