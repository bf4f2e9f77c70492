"""Concrete shapes of every tensor for analysis: onnx shape inference first, ONNX Runtime on a
dummy input for whatever inference leaves open."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import shape_inference

from onnxwootz.core.errors import BadModelError, first_line
from onnxwootz.core.onnx_helpers import (dummy_feed, has_schema, initializer_names, set_dims, skeleton,
                                         without_weights)
from onnxwootz.runtime.sessions import cpu_session


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
