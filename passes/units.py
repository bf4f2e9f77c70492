"""Units: the entries of a pruning configuration.

`module` granularity (the paper's): the graph is cut at tensors that every input-to-output
path crosses; the nodes between two cuts form a module (modules without a filter producer are
merged into the one before; a depthwise conv is not a filter producer here, since it keeps its
input's channels: MobileNet's pointwise conv and the depthwise conv after it are one module, so
the channel group between them lies inside it instead of spanning three modules). Nor is a gate:
a run whose channel-mixing layers all compute tensors without spatial extent and whose exits
are feature maps reached from its entries without a mixing layer (a squeeze-and-excitation
gate, x * sigmoid(fc(relu(fc(pool(x)))))) keeps its entry's channels, scaled, and joins the
module before too; else an inverted-residual block without a skip split into expand | gate |
project modules, its expanded channels produced in two of them, and they were kept as if they
were a residual stream.
A module that holds most of the model's filter weights (LARGE_MODULE_SHARE) is split
further at frontiers where every live tensor but one is parked (see PARKED_FILTERS): a
backbone whose stage outputs feed an FPN has no single tensor between its stages, so without
this it is one module, one rate for most of the network. A module's entries are the tensors it
reads from before it, its exits the tensors it computes that are read after it (one each for a
single-tensor cut). Groups whose filters and consumers all lie inside one module take the
module's rate; a group that leaves its module (the module's top layer) is kept, except in a
module whose internal groups all have their filters in gates that joined it (none: a plain
chain such as VGG; an SE gate's squeezed channels: MobileNetV3's expand | depthwise | SE), where
its output group is its unit, with the gates' groups.
`group` granularity: every prunable group is a unit of its own."""

from __future__ import annotations

import dataclasses
import numpy as np
import onnx

from onnxwootz.core.onnx_helpers import without_weights
from onnxwootz.passes.channel_groups import ChannelAnalysis
from onnxwootz.passes.graph_index import GraphIndex
from onnxwootz.passes.ops import data_inputs, filter_layout, mixes_channels, op_kind

GRANULARITIES = ("module", "group")
PARKED_FILTERS = 4
"""A tensor that waits across at least this many channel-mixing layers between two reads (an
FPN's lateral input, a U-Net skip) is parked there. Residual, dense and inception branches
wait across fewer within the modules single-tensor cuts find, and only a large module is split
at parked frontiers, so those modules are unchanged."""
LARGE_MODULE_SHARE = 1 / 2
"""A single-tensor module with more than this share of the model's filter weights is split at
parked frontiers (PP-OCRv4's detector: one module of backbone and FPN held 97% of them, a
YOLOv8's 98%). In the zoo and the tiny test nets the largest such modules are fully connected
heads (VGG-19: 72%, nothing parked in them) or below half (a 4-branch inception module of a
tiny net: 47%; its branch outputs wait across the other branches, so splitting it would give
branch units instead of the paper's inception module)."""


@dataclasses.dataclass
class Unit:
    name: str  # short and stable: m<module number> or g<group id>
    label: str  # the first filter producer in it, for people
    groups: list[int]
    nodes: list[str]
    entries: list[str] = dataclasses.field(default_factory=list)  # module granularity: tensors entering the module
    exits: list[str] = dataclasses.field(default_factory=list)  # and the tensors leaving it
    module: int | None = None  # module granularity: the module's number
    prunes_exit: bool = False  # a chain module's unit: its output group, read by the next module


@dataclasses.dataclass
class Module:
    nodes: list[onnx.NodeProto]
    entries: list[str]
    exits: list[str]
    gates: list[str] = dataclasses.field(default_factory=list)  # the nodes of the gates that joined it


@dataclasses.dataclass
class Span:
    """Consecutive activation nodes with the tensors they read from before them and the
    tensors they compute that are read after them (or are graph outputs)."""

    nodes: list[onnx.NodeProto]
    entries: list[str]
    exits: list[str]


@dataclasses.dataclass
class UnitPlan:
    units: list[Unit]
    kept: dict[int, str]  # group id -> why it is kept (barriers and module tops)
    order: "ActivationOrder | None" = dataclasses.field(default=None, repr=False)
    modules: list[Module] = dataclasses.field(default_factory=list, repr=False)
    boundaries: list[str] = dataclasses.field(default_factory=list)  # every module's entries and exits
    reads: dict[str, set[int]] = dataclasses.field(default_factory=dict, repr=False)  # see units_read

    def span(self, start: int, stop: int) -> Span:
        """A tuning block's span (module granularity): the nodes from unit `start`'s first to
        unit `stop - 1`'s last, with the modules between them that hold no unit. When the last
        unit prunes its exit (a chain module), the span runs on to the end of the next module:
        the layers that read the pruned channels are the ones that lose something (a
        PP-OCRv4 recognizer unit L1-pruned alone at 0.2 read 0.01 exact strings, 0.99 once the
        conv after it was refitted), so the block's student holds them and imitates the
        teacher's full tensors after them."""
        if self.order is None:
            raise ValueError("spans exist at module granularity only")
        last = self.units[stop - 1]
        end = last.nodes[-1]
        if last.prunes_exit and last.module is not None and last.module + 1 < len(self.modules):
            end = self.modules[last.module + 1].nodes[-1].name
        return self.order.span(self.units[start].nodes[0], end)


def activation_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Nodes on activation paths: shape computations (Shape -> Gather -> ...) excluded."""
    index = GraphIndex(model)
    shape_only: set[str] = set()
    for node in model.graph.node:
        ins = [name for name in data_inputs(node) if name not in index.initializers]
        kind = op_kind(node)
        if (kind is not None and kind.shape_only) or (ins and all(name in shape_only for name in ins)) or not ins:
            shape_only.update(node.output)
    return [node for node in model.graph.node if not all(out in shape_only for out in node.output if out)]


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Activation shapes from onnx shape inference (None: a dim it leaves open); none when it fails."""
    try:
        inferred = onnx.shape_inference.infer_shapes(without_weights(model), data_prop=True)
    except Exception:  # no shapes: no gates, the modules are the single-tensor cuts' alone
        return {}
    shapes = {}
    for value in [*inferred.graph.value_info, *inferred.graph.output]:
        tensor = value.type.tensor_type
        if tensor.HasField("shape"):
            shapes[value.name] = [dim.dim_value if dim.HasField("dim_value") else None for dim in tensor.shape.dim]
    return shapes


def _extents(shapes: dict[str, list[int | None]]) -> tuple[set[str], set[str]]:
    """Tensors without spatial extent (every axis after the channels of size 1: a pooled or
    fully connected tensor), and those with (rank 3 or more, some such axis not known to be 1).
    A tensor of unknown shape is in neither."""
    flat = {name for name, dims in shapes.items() if all(dim == 1 for dim in dims[2:])}
    return flat, {name for name, dims in shapes.items() if len(dims) > 2} - flat


def _mixes_channels(node: onnx.NodeProto, index: GraphIndex) -> bool:
    """ops.mixes_channels with the weight's shape from its initializer (no data read)."""
    weight = index.initializers.get(node.input[1]) if len(node.input) > 1 else None
    return mixes_channels(node, None if weight is None else list(weight.dims))


class ActivationOrder:
    """The activation nodes in graph order, with where each activation tensor is computed and
    read: the liveness that module cuts and span boundaries are read from."""

    def __init__(self, model: onnx.ModelProto, shapes: dict[str, list[int]] | None = None):
        """`shapes`: the tensors' shapes where known (else onnx shape inference gives them, if
        a gate is looked for)."""
        self.index = GraphIndex(model)
        self.nodes = activation_nodes(model)
        self.position = {node.name: p for p, node in enumerate(self.nodes)}
        self.outputs = set(self.index.graph_outputs)
        self.produced_at: dict[str, int] = {name: -1 for name in self.index.graph_inputs}
        self.read_at: dict[str, list[int]] = {}
        for p, node in enumerate(self.nodes):
            for name in data_inputs(node):
                if name not in self.index.initializers:
                    self.read_at.setdefault(name, []).append(p)
            self.produced_at.update({name: p for name in node.output if name})
        self.last_read = {name: np.inf if name in self.outputs else max(self.read_at.get(name, [-1]))
                          for name in self.produced_at}
        mixing = [_mixes_channels(node, self.index) for node in self.nodes]
        self.weights = [self._weight_size(node) if mix else 0 for node, mix in zip(self.nodes, mixing)]
        self.mixing = np.array(mixing, dtype=bool)
        self._mixers_before = np.concatenate([[0], np.cumsum(self.mixing)])
        self._shapes = shapes
        self._extent_sets: tuple[set[str], set[str]] | None = None

    def _weight_size(self, node: onnx.NodeProto) -> int:
        weight = self.index.array(node.input[1]) if len(node.input) > 1 else None
        return int(weight.size) if weight is not None else 0

    def live(self) -> list[set[str]]:
        """For each position p, the activation tensors computed at or before p and needed after it."""
        starts: dict[int, list[str]] = {}
        for name, p in self.produced_at.items():
            if self.last_read[name] > p:
                starts.setdefault(p, []).append(name)
        live: set[str] = set(starts.get(-1, []))
        result = []
        for p in range(len(self.nodes)):
            live.update(starts.get(p, []))
            live = {name for name in live if self.last_read[name] > p}
            result.append(set(live))
        return result

    def parked(self) -> list[set[str]]:
        """For each position p, the live tensors in a wait of PARKED_FILTERS channel-mixing
        layers or more between their computation (or a read) and their next read."""
        parked: list[set[str]] = [set() for _ in self.nodes]
        for name, reads in self.read_at.items():
            if name not in self.produced_at:
                continue
            points = [self.produced_at[name], *sorted(reads)]
            for a, b in zip(points, points[1:]):
                if self._mixers_before[b] - self._mixers_before[a + 1] >= PARKED_FILTERS:
                    for p in range(max(a, 0), b):
                        parked[p].add(name)
        return parked

    def span(self, first: str, last: str) -> Span:
        a, b = self.position[first], self.position[last]
        nodes = self.nodes[a:b + 1]
        inside = {name for node in nodes for name in node.output if name}
        entries = [name for node in nodes for name in data_inputs(node)
                   if name in self.produced_at and name not in inside]
        exits = [name for node in nodes for name in node.output
                 if name in inside and self.last_read[name] > b]
        return Span(nodes, list(dict.fromkeys(entries)), exits)

    def makes_channels(self, a: int, b: int) -> bool:
        """Whether nodes a..b-1 compute channels of their own: they hold a channel-mixing
        producer and are no gate (see the module docstring: mixers whose outputs are all
        without spatial extent, exits all feature maps reached from the entries through nodes
        that mix no channels)."""
        mixers = [node for node, mixes in zip(self.nodes[a:b], self.mixing[a:b]) if mixes]
        if not mixers:
            return False
        span = self.span(self.nodes[a].name, self.nodes[b - 1].name)
        reached = set(span.entries)
        for node, mixes in zip(span.nodes, self.mixing[a:b]):
            if not mixes and reached.intersection(data_inputs(node)):
                reached.update(name for name in node.output if name)
        if not span.exits or not reached.issuperset(span.exits):
            return True
        if self._extent_sets is None:
            known = self._shapes if self._shapes is not None else _inferred_shapes(self.index.model)
            self._extent_sets = _extents(known)
        flat, spatial = self._extent_sets
        gated = all(name in flat for node in mixers for name in node.output if name)
        return not (gated and spatial.issuperset(span.exits))

    def runs(self, cuts: list[int], start: int, stop: int) -> list[tuple[int, int, set[int]]]:
        """Node ranges [a, b) of positions start..stop-1 split after each cut; a range that
        makes no channels of its own (no channel-mixing producer, or a gate) joins the one
        before (the first joins the one after). With each range, the positions of the gates
        that joined it."""
        bounds = [start, *[p + 1 for p in cuts if start <= p < stop - 1], stop]
        merged: list[list] = []  # [a, b, gate positions]
        for a, b in zip(bounds, bounds[1:]):
            if merged and not self.makes_channels(a, b):
                merged[-1][1] = b
                merged[-1][2] |= self._gate(a, b)
            else:
                merged.append([a, b, set()])
        if len(merged) > 1 and not self.makes_channels(merged[0][0], merged[0][1]):
            a, b, _ = merged.pop(0)
            merged[0][0] = a
            merged[0][2] |= self._gate(a, b)
        return [(a, b, gates) for a, b, gates in merged]

    def _gate(self, a: int, b: int) -> set[int]:
        """Positions a..b-1 of a range that joins another, if it is a gate (it mixes channels)."""
        return set(range(a, b)) if self.mixing[a:b].any() else set()


def modules(order: ActivationOrder) -> list[Module]:
    """Node runs between single-tensor cuts, large ones split again at parked frontiers."""
    if not order.nodes:
        return []
    live = order.live()
    single = [p for p, names in enumerate(live) if len(names) == 1]
    total = max(sum(order.weights), 1)
    parked: list[set[str]] | None = None
    ranges = []
    for a, b, gates in order.runs(single, 0, len(order.nodes)):
        if sum(order.weights[a:b]) > LARGE_MODULE_SHARE * total:
            parked = parked or order.parked()
            frontier = [p for p in range(a, b) if len(live[p] - parked[p]) == 1]
            ranges.extend(order.runs(frontier, a, b))
        else:
            ranges.append((a, b, gates))
    result = []
    for a, b, gates in ranges:
        span = order.span(order.nodes[a].name, order.nodes[b - 1].name)
        result.append(Module(span.nodes, span.entries, span.exits, [order.nodes[p].name for p in sorted(gates)]))
    return result


def _group_nodes(model: onnx.ModelProto, analysis: ChannelAnalysis) -> dict[int, set[str]]:
    """Nodes that read or write each group's channels."""
    touched: dict[int, set[str]] = {}
    for node in model.graph.node:
        for name in list(node.input) + list(node.output):
            for group in analysis.group_of_tensor(name):
                touched.setdefault(group, set()).add(node.name)
    return touched


def units_read(model: onnx.ModelProto, analysis: ChannelAnalysis, units: list[Unit]) -> dict[str, set[int]]:
    """For each weight, the units (indices into `units`) whose channels the layer holding it
    reads: the units whose pruning takes input channels from it. A chain unit's block runs on
    into the next module, so a layer there that reads the chain's channels lies in two blocks
    when that module is a unit too; it is the chain's block that refits it for its cut inputs."""
    unit_of = {group: number for number, unit in enumerate(units) for group in unit.groups}
    weights = {init.name for init in model.graph.initializer}
    reads: dict[str, set[int]] = {}
    for node in model.graph.node:
        names = data_inputs(node)
        read = {unit_of[group] for name in names if name not in weights
                for group in analysis.group_of_tensor(name) if group in unit_of}
        reads.update({name: read for name in names if name in weights})
    return reads


def _gate_groups(analysis: ChannelAnalysis, module_list: list[Module]) -> set[int]:
    """Groups whose filters all lie in gates (an SE block's squeezed channels)."""
    gates = {name for module in module_list for name in module.gates}
    return {group.id for group in analysis.groups if group.producers and set(group.producers) <= gates}


def plan_units(model: onnx.ModelProto, analysis: ChannelAnalysis, granularity: str,
               shapes: dict[str, list[int]] | None = None) -> UnitPlan:
    """`shapes` (PreparedModel.shapes) spare a shape inference when a gate is looked for."""
    kept = {g.id: g.kept_reason for g in analysis.groups if not g.prunable}
    prunable = [g for g in analysis.groups if g.prunable]
    if granularity == "group":
        units = [Unit(f"g{g.id}", g.producers[0], [g.id], list(g.producers)) for g in prunable]
        return UnitPlan(units, kept, reads=units_read(model, analysis, units))
    node_module: dict[str, int] = {}
    order = ActivationOrder(model, shapes)
    module_list = modules(order)
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
    gates = _gate_groups(analysis, module_list)
    units = []
    for number, module in enumerate(module_list):
        inside, leaving = internal.get(number, []), crossing.get(number, [])
        chain = not set(inside) - gates
        groups = leaving + inside if chain and leaving else inside
        if not chain:
            for group_id in leaving:
                kept[group_id] = "module output (the module's top layer is kept)"
        if groups:
            run = module.nodes
            first = next((n.name for n in run if filter_layout(n) is not None), run[0].name)
            units.append(Unit(f"m{number}", first, sorted(groups), [n.name for n in run], module.entries, module.exits,
                              number, chain and bool(leaving)))
    boundaries = sorted({name for module in module_list for name in [*module.entries, *module.exits]})
    return UnitPlan(units, kept, order, module_list, boundaries, units_read(model, analysis, units))
