"""Channel-dependency analysis: which filters must be pruned together (channel groups),
how important each group channel is (summed L1 norm of its filters), and which groups are
kept, with the reason.

Each producer filter is an *atom*. Rules (the op registry's, ops.RULES) propagate per-tensor
atom ids and tie atoms that must go together. Tied atoms form a *channel* (connected components of
the tie graph); channels whose atoms share producers form a *group*. A group is prunable
unless one of its channels touches a barrier, a graph input or a graph output."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx

from onnxwootz.passes.channel_state import ChannelState
from onnxwootz.passes.graph_index import GraphIndex
from onnxwootz.passes.ops import CHANNELS_LAST_RULES, DOMAIN_RULES, RULES, filter_count


@dataclasses.dataclass
class ChannelGroup:
    """Channels that are pruned together. `channel_atoms[k]` are the filters of channel k."""

    id: int
    producers: list[str]
    channel_atoms: list[np.ndarray]
    importance: np.ndarray
    kept_reason: str | None = None
    kept_by: str | None = None

    @property
    def channels(self) -> int:
        return len(self.channel_atoms)

    @property
    def prunable(self) -> bool:
        return self.kept_reason is None


@dataclasses.dataclass
class ChannelAnalysis:
    """Result of the analysis: per-tensor atom ids and the channel groups."""

    ids: dict[str, np.ndarray]
    groups: list[ChannelGroup]
    atom_group: np.ndarray  # group id per atom
    atom_channel: np.ndarray  # channel index (within its group) per atom
    split_outputs: list[str]
    flatten_reshapes: set[str]
    atom_count: int
    channels_last: set[str] = dataclasses.field(default_factory=set)  # ids on the last axis

    def channel_axis(self, name: str, rank: int) -> int:
        """The axis that tensor `name` (of `rank`) holds its channels on."""
        return rank - 1 if name in self.channels_last else 1

    def group_of_tensor(self, name: str) -> list[int]:
        ids = self.ids.get(name)
        return [] if ids is None else sorted(set(self.atom_group[ids].tolist()))


def _components(count: int, pairs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Connected-component label (the smallest member) per node, for undirected edges
    (pairs[0][k], pairs[1][k]): min-label propagation with pointer jumping, all in numpy."""
    labels = np.arange(count)
    a, b = pairs
    if not len(a):
        return labels
    while True:
        low = np.minimum(labels[a], labels[b])
        before = labels.copy()
        np.minimum.at(labels, a, low)
        np.minimum.at(labels, b, low)
        while True:  # pointer jumping: every node points at its label's label
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
        if np.array_equal(labels, before):
            return labels


def _tie_pairs(ties: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if not ties:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate([a for a, _ in ties]), np.concatenate([b for _, b in ties])


def analyze_channels(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> ChannelAnalysis:
    """Run the rule table over a canonical model with concrete shapes."""
    index = GraphIndex(model)
    st = ChannelState(index, shapes, filter_count)
    for name in index.graph_inputs:
        st.opaque_source(name, f"graph input '{name}'")
    for node in model.graph.node:
        standard = node.domain in ("", "ai.onnx")
        rule = RULES.get(node.op_type) if standard else DOMAIN_RULES.get((node.domain, node.op_type))
        channels_last = any(name in st.channels_last for name in node.input)
        if channels_last:
            rule = CHANNELS_LAST_RULES.get(node.op_type) if standard else None
        unknown = next((out for out in node.output if out and out not in shapes), None)
        if rule is None and channels_last:
            st.barrier(node, "reads a channels-last tensor in a way the analysis does not follow")
        elif rule is None:
            domain = "" if standard else f" (domain '{node.domain}')"
            st.barrier(node, f"op not known to the channel analysis{domain}")
        elif unknown is not None:
            st.barrier(node, f"the shape of '{unknown}' is unknown (no inference knows it)")
        else:
            rule(node, st)
    for name in index.graph_outputs:
        ids = st.ids.get(name)
        if ids is not None:
            st.keep(ids, f"reaches graph output '{name}'", None)
    return _build_groups(st)


def _build_groups(st: ChannelState) -> ChannelAnalysis:
    count = st.count
    l1 = np.concatenate(st.l1s) if st.l1s else np.zeros(0)
    owner = np.concatenate(st.owners) if st.owners else np.zeros(0, dtype=np.int64)
    _, channel = np.unique(_components(count, _tie_pairs(st.ties)), return_inverse=True)  # channel per atom
    n_channels = int(channel.max()) + 1 if count else 0
    # channels sharing a producer belong to one group: union channels through their producers
    filters = owner >= 0
    size = n_channels + len(st.producer_names)
    labels = _components(size, (channel[filters], n_channels + owner[filters]))
    channel_group_label = labels[:n_channels]
    # renumber groups in order of first appearance (topological order of atoms)
    order: dict[int, int] = {}
    atom_group = np.empty(count, dtype=np.int64)
    for label in channel_group_label[channel]:
        if label not in order:
            order[label] = len(order)
    remap = np.array([order.get(label, -1) for label in range(labels.max() + 1 if len(labels) else 0)])
    atom_group[:] = remap[channel_group_label[channel]] if count else 0
    groups: list[ChannelGroup] = []
    atom_channel = np.empty(count, dtype=np.int64)
    for group_id in range(len(order)):
        atoms = np.nonzero(atom_group == group_id)[0]
        channel_labels, inverse = np.unique(channel[atoms], return_inverse=True)
        channel_atoms = [atoms[inverse == k] for k in range(len(channel_labels))]
        atom_channel[atoms] = inverse
        importance = np.array([l1[a].sum() for a in channel_atoms])
        producer_ids = sorted(set(owner[atoms][owner[atoms] >= 0].tolist()))
        groups.append(ChannelGroup(group_id, [st.producer_names[p] for p in producer_ids], channel_atoms, importance))
    for ids, reason, node_name in st.kept:
        for group_id in np.unique(atom_group[ids]):
            group = groups[group_id]
            if group.kept_reason is None:
                group.kept_reason = reason
                group.kept_by = node_name
    for group in groups:
        if group.kept_reason is None and not group.producers:
            group.kept_reason = "no prunable filters"
    return ChannelAnalysis(st.ids, groups, atom_group, atom_channel, st.split_outputs, st.flatten_reshapes, count,
                           st.channels_last)
