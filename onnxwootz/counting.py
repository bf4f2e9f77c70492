"""Parameter and multiply-accumulate counts per node and in total (per sample, batch 1)."""

from __future__ import annotations

import dataclasses

import onnx

from onnxwootz.core.onnx_helpers import FLOAT_TYPES
from onnxwootz.passes.filters import elements
from onnxwootz.passes.graph_index import GraphIndex
from onnxwootz.passes.ops import data_inputs, op_kind


@dataclasses.dataclass
class NodeCost:
    name: str
    op_type: str
    params: int
    macs: int


def node_macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int:
    """MACs of one node for the batch in `shapes`, divided by that batch (per sample)."""
    out = shapes.get(node.output[0]) if node.output else None
    kind = op_kind(node)
    if not out or kind is None or kind.macs is None:
        return 0
    return kind.macs(node, shapes, out) // max(out[0], 1)


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
                params += elements(list(init.dims)) if init.dims else 1
        costs.append(NodeCost(node.name, node.op_type, params, node_macs(node, shapes)))
    unread = sum(elements(list(init.dims)) for name, init in index.initializers.items()
                 if name not in seen and init.data_type in FLOAT_TYPES)
    return sum(c.params for c in costs) + unread, sum(c.macs for c in costs), costs
