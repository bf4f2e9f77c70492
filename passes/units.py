"""Units: the entries of a pruning configuration.

`module` granularity (the paper's): the graph is cut at tensors that every input-to-output
path crosses; the nodes between two cuts form a module (modules without a filter producer are
merged into the one before; a depthwise conv is not a filter producer here, since it keeps its
input's channels: MobileNet's pointwise conv and the depthwise conv after it are one module, so
the channel group between them lies inside it instead of spanning three modules). Groups whose filters and consumers all lie inside one module
take the module's rate; a group that leaves its module (the module's top layer) is kept,
except in a module with no internal group (a plain chain such as VGG), where its output
group is its unit. `group` granularity: every prunable group is a unit of its own."""

from __future__ import annotations

import dataclasses

import onnx

from onnxwootz.passes.channel_groups import ChannelAnalysis
from onnxwootz.passes.graph_index import SHAPE_OPS, GraphIndex, attribute, data_inputs

GRANULARITIES = ("module", "group")
_PRODUCERS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


@dataclasses.dataclass
class Unit:
    name: str  # short and stable: m<module number> or g<group id>
    label: str  # the first filter producer in it, for people
    groups: list[int]
    nodes: list[str]
    entry: str | None = None  # module granularity: the tensor entering the module
    exit: str | None = None  # and the tensor leaving it


@dataclasses.dataclass
class Module:
    nodes: list[onnx.NodeProto]
    entry: str
    exit: str


@dataclasses.dataclass
class UnitPlan:
    units: list[Unit]
    kept: dict[int, str]  # group id -> why it is kept (barriers and module tops)


def activation_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes on activation paths: shape computations (Shape -> Gather -> ...) excluded."""
    index = GraphIndex(model)
    shape_only: set[str] = set()
    for node in model.graph.node:
        ins = [name for name in data_inputs(node) if name not in index.initializers]
        if node.op_type in SHAPE_OPS or (ins and all(name in shape_only for name in ins)) or not ins:
            shape_only.update(node.output)
    return [node for node in model.graph.node if not all(out in shape_only for out in node.output if out)]


def module_cuts(model: onnx.ModelProto) -> list[tuple[int, str]]:
    """(i, tensor): after activation node i exactly one activation tensor is live."""
    nodes = activation_nodes(model)
    index = GraphIndex(model)
    consumers_left: dict[str, int] = {}
    for node in nodes:
        for name in data_inputs(node):
            if name not in index.initializers:
                consumers_left[name] = consumers_left.get(name, 0) + 1
    outputs = set(index.graph_outputs)
    live: set[str] = {name for name in index.graph_inputs if consumers_left.get(name)}
    cuts = []
    for position, node in enumerate(nodes):
        for name in data_inputs(node):
            if name in consumers_left:
                consumers_left[name] -= 1
                if consumers_left[name] == 0 and name not in outputs:
                    live.discard(name)
        for name in node.output:
            if name and (consumers_left.get(name) or name in outputs):
                live.add(name)
        if len(live) == 1 and position < len(nodes) - 1:
            cuts.append((position, next(iter(live))))
    return cuts


def _mixes_channels(node: onnx.NodeProto, index: GraphIndex) -> bool:
    """A filter producer whose outputs mix input channels (a depthwise conv does not)."""
    if node.op_type != "Conv" or attribute(node, "group", 1) == 1:
        return node.op_type in _PRODUCERS
    weight = index.array(node.input[1])
    return weight is None or weight.shape[1] != 1


def modules(model: onnx.ModelProto) -> list[Module]:
    """Consecutive node runs between cuts; runs without a channel-mixing filter producer join
    the run before."""
    nodes = activation_nodes(model)
    index = GraphIndex(model)
    cuts = module_cuts(model)
    first_input = index.graph_inputs[0] if index.graph_inputs else ""
    last_output = index.graph_outputs[0] if index.graph_outputs else ""
    bounds = [(-1, first_input)] + cuts + [(len(nodes) - 1, last_output)]
    runs = [Module(nodes[a + 1:b + 1], entry, exit_) for (a, entry), (b, exit_) in zip(bounds, bounds[1:]) if b > a]
    merged: list[Module] = []
    for run in runs:
        if merged and not any(_mixes_channels(node, index) for node in run.nodes):
            merged[-1].nodes.extend(run.nodes)
            merged[-1].exit = run.exit
        else:
            merged.append(run)
    if len(merged) > 1 and not any(_mixes_channels(node, index) for node in merged[0].nodes):
        merged[1] = Module(merged[0].nodes + merged[1].nodes, merged[0].entry, merged[1].exit)
        merged.pop(0)
    return merged


def _group_nodes(model: onnx.ModelProto, analysis: ChannelAnalysis) -> dict[int, set[str]]:
    """Nodes that read or write each group's channels."""
    touched: dict[int, set[str]] = {}
    for node in model.graph.node:
        for name in list(node.input) + list(node.output):
            for group in analysis.group_of_tensor(name):
                touched.setdefault(group, set()).add(node.name)
    return touched


def plan_units(model: onnx.ModelProto, analysis: ChannelAnalysis, granularity: str) -> UnitPlan:
    kept = {g.id: g.kept_reason for g in analysis.groups if not g.prunable}
    prunable = [g for g in analysis.groups if g.prunable]
    if granularity == "group":
        units = [Unit(f"g{g.id}", g.producers[0], [g.id], list(g.producers)) for g in prunable]
        return UnitPlan(units, kept)
    node_module: dict[str, int] = {}
    module_list = modules(model)
    for number, module in enumerate(module_list):
        for node in module.nodes:
            node_module[node.name] = number
    touched = _group_nodes(model, analysis)
    internal: dict[int, list[int]] = {}
    crossing: dict[int, list[int]] = {}
    for group in prunable:
        homes = {node_module.get(name) for name in touched.get(group.id, set())} - {None}
        producer_homes = {node_module.get(name) for name in group.producers} - {None}
        if len(homes) == 1:
            internal.setdefault(homes.pop(), []).append(group.id)
        elif len(producer_homes) == 1:
            crossing.setdefault(producer_homes.pop(), []).append(group.id)
        else:
            kept[group.id] = "spans several modules (residual stream)"
    units = []
    for number, module in enumerate(module_list):
        groups = internal.get(number) or crossing.get(number, [])
        if internal.get(number):
            for group_id in crossing.get(number, []):
                kept[group_id] = "module output (the module's top layer is kept)"
        if groups:
            run = module.nodes
            first = next((n.name for n in run if n.op_type in _PRODUCERS), run[0].name)
            units.append(Unit(f"m{number}", first, sorted(groups), [n.name for n in run], module.entry, module.exit))
    return UnitPlan(units, kept)
