"""Parameter and multiply-accumulate counts per node and in total (per sample, batch 1)."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx

from onnxwootz.core.onnx_helpers import FLOAT_TYPES
from onnxwootz.passes.graph_index import GraphIndex, attribute, data_inputs



@dataclasses.dataclass
class NodeCost:
    name: str
    op_type: str
    params: int
    macs: int


def _size(shape: list[int] | None) -> int:
    return int(np.prod(shape)) if shape else 0


def node_macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int:
    """MACs of one node for the batch in `shapes`, divided by that batch (per sample)."""
    out = shapes.get(node.output[0]) if node.output else None
    if not out:
        return 0
    batch = max(out[0], 1) if out else 1
    if node.op_type == "Conv":
        weight = shapes.get(node.input[1])
        if not weight:
            return 0
        return _size(out) * _size(weight[1:]) // batch
    if node.op_type == "ConvTranspose":
        weight = shapes.get(node.input[1])
        data = shapes.get(node.input[0])
        if not weight or not data:
            return 0
        return _size(data) * weight[1] * _size(weight[2:]) // batch
    if node.op_type == "Gemm":
        a = shapes.get(node.input[0])
        if not a:
            return 0
        k = a[0] if attribute(node, "transA", 0) else a[1]
        return _size(out) * k // batch
    if node.op_type == "MatMul":
        a = shapes.get(node.input[0])
        if not a:
            return 0
        return _size(out) * a[-1] // batch
    return 0


def count(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> tuple[int, int, list[NodeCost]]:
    """(total params, total MACs, per-node costs). Params are float initializers read as data
    (not Clip bounds, Resize scales and other op parameters), each counted once, attributed to
    the first node that reads them."""
    index = GraphIndex(model)
    seen: set[str] = {name for node in model.graph.node for name in node.input} - {
        name for node in model.graph.node for name in data_inputs(node)}
    costs = []
    for node in model.graph.node:
        params = 0
        for name in data_inputs(node):
            init = index.initializers.get(name)
            if init is not None and name not in seen and init.data_type in FLOAT_TYPES:
                seen.add(name)
                params += _size(list(init.dims)) if init.dims else 1
        costs.append(NodeCost(node.name, node.op_type, params, node_macs(node, shapes)))
    unread = sum(_size(list(init.dims)) for name, init in index.initializers.items()
                 if name not in seen and init.data_type in FLOAT_TYPES)
    return sum(c.params for c in costs) + unread, sum(c.macs for c in costs), costs
