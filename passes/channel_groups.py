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
from onnxwootz.passes.ops import CHANNELS_LAST_RULES, DOMAIN_RULES, RULES, data_inputs, filter_count, zero_rule


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

    def channel_numbers(self) -> tuple[np.ndarray, np.ndarray]:
        """The channels of all groups numbered one after another: per group the number of its
        first channel (and the total last), and per atom the number of its channel."""
        first = np.zeros(len(self.groups) + 1, dtype=np.int64)
        np.cumsum([group.channels for group in self.groups], out=first[1:])
        return first, first[self.atom_group] + self.atom_channel

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


def _channel_sums(l1: np.ndarray, order: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per channel (a run of `order` from each of `starts`), the sum of its atoms' L1 norms:
    channels of one length at a time, each a row of a 2-D gather, so every sum is bitwise the
    one numpy gives the channel's atoms alone (a contiguous row reduces as a 1-D array does)."""
    lengths = np.diff(np.append(starts, len(order)))
    sums = np.empty(len(starts))
    for length in np.unique(lengths):
        rows = np.flatnonzero(lengths == length)
        sums[rows] = l1[order[starts[rows, None] + np.arange(length)]].sum(axis=1)
    return sums


def analyze_channels(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> ChannelAnalysis:
    """Run the rule table over a canonical model with concrete shapes."""
    index = GraphIndex(model)
    st = ChannelState(index, shapes, filter_count, lambda node: zero_rule(node, index), data_inputs)
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
    channel = channel.reshape(-1)
    n_channels = int(channel.max()) + 1 if count else 0
    # channels sharing a producer belong to one group: union channels through their producers
    filters = owner >= 0
    size = n_channels + len(st.producer_names)
    labels = _components(size, (channel[filters], n_channels + owner[filters]))
    # groups numbered in order of first appearance (topological order of atoms)
    found, first, label_index = np.unique(labels[:n_channels][channel], return_index=True, return_inverse=True)
    number = np.empty(len(found), dtype=np.int64)
    number[np.argsort(first, kind="stable")] = np.arange(len(found))
    atom_group = number[label_index.reshape(-1)] if count else np.zeros(0, dtype=np.int64)
    # atoms by group, then channel, then id: each channel is one run, each group a run of channels
    order = np.lexsort((channel, atom_group))
    group_sorted, channel_sorted = atom_group[order], channel[order]
    starts_channel = np.ones(count, dtype=bool)
    starts_channel[1:] = (group_sorted[1:] != group_sorted[:-1]) | (channel_sorted[1:] != channel_sorted[:-1])
    channel_number = np.cumsum(starts_channel) - 1  # per sorted atom, its channel over all groups
    channel_start = np.flatnonzero(starts_channel)
    group_first = np.searchsorted(group_sorted[channel_start], np.arange(len(found) + 1))  # first channel per group
    atom_channel = np.empty(count, dtype=np.int64)
    atom_channel[order] = channel_number - group_first[group_sorted]
    bounds = np.append(channel_start, count)  # atoms of channel k: order[bounds[k]:bounds[k + 1]]
    edges = bounds.tolist()
    channel_atoms = [order[low:high] for low, high in zip(edges, edges[1:])]
    importance = _channel_sums(l1, order, channel_start)
    groups: list[ChannelGroup] = []
    for group_id in range(len(found)):
        low, high = group_first[group_id], group_first[group_id + 1]
        owners = owner[order[bounds[low]:bounds[high]]]
        producer_ids = np.unique(owners[owners >= 0]).tolist()
        groups.append(ChannelGroup(group_id, [st.producer_names[p] for p in producer_ids], channel_atoms[low:high],
                                   importance[low:high]))
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
