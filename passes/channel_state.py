"""The mutable state the channel rules (channel_rules) work on during one analysis
(channel_groups): atom ids per tensor, the filters they stand for, ties and kept reasons. Its
own module, so that the rules and the analysis both use it without importing each other."""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx

from onnxwootz.passes.graph_index import GraphIndex


class ChannelState:
    """Mutable state the rules work on during one analysis."""

    def __init__(self, index: GraphIndex, shapes: dict[str, list[int]],
                 filter_count: Callable[[onnx.NodeProto, GraphIndex], int | None],
                 zero_rule: Callable[[onnx.NodeProto], str | None] = lambda node: None,
                 data_inputs: Callable[[onnx.NodeProto], list[str]] = lambda node: list(node.input)):
        self.index = index
        self.shapes = shapes
        # the op registry's answers (ops.filter_count, ops.zero_rule, ops.data_inputs): the rules'
        # module cannot import the registry, which imports it
        self.filter_count = filter_count
        self.zero_rule = zero_rule
        self.data_inputs = data_inputs
        self.zero_removed: dict[str, bool] = {}  # zeros.removed_are_zero's answers so far
        self.ids: dict[str, np.ndarray] = {}
        self.split_outputs: list[str] = []
        self.flatten_reshapes: set[str] = set()
        self.l1s: list[np.ndarray] = []
        self.owners: list[np.ndarray] = []  # producer index per atom (-1: not a filter)
        self.producer_names: list[str] = []
        self.ties: list[tuple[np.ndarray, np.ndarray]] = []
        self.kept: list[tuple[np.ndarray, str, str]] = []
        self.channels_last: set[str] = set()  # tensors whose ids label the last axis, not axis 1
        self.count = 0

    def fresh(self, node: onnx.NodeProto | None, l1: np.ndarray, prunable: bool = True) -> np.ndarray:
        """New atoms, one per filter of `node` (non-prunable sources get owner -1)."""
        n = len(l1)
        ids = np.arange(self.count, self.count + n)
        self.count += n
        self.l1s.append(np.asarray(l1, dtype=np.float64))
        owner = -1
        if prunable and node is not None:
            owner = len(self.producer_names)
            self.producer_names.append(node.name)
        self.owners.append(np.full(n, owner))
        return ids

    def tie(self, a: np.ndarray, b: np.ndarray) -> None:
        if a is b or (len(a) == len(b) and np.array_equal(a, b)):
            return
        self.ties.append((a, b))

    def keep(self, ids: np.ndarray, reason: str, node: onnx.NodeProto | None) -> None:
        self.kept.append((ids, reason, node.name if node is not None else ""))

    def barrier(self, node: onnx.NodeProto, why: str) -> None:
        """Keep every channel that touches `node`; its outputs get opaque, kept channels."""
        reason = f"{node.op_type} '{node.name}': {why}"
        for name in node.input:
            ids = self.ids.get(name)
            if ids is not None:
                self.keep(ids, reason, node)
        last_ranks = {len(self.shapes[name]) for name in node.input if name in self.channels_last}
        for name in node.output:
            shape = self.shapes.get(name)
            if name and shape is not None and len(shape) in last_ranks:  # a channels-last result (LayerNorm)
                ids = self.fresh(node, np.zeros(shape[-1]), prunable=False)
                self.channels_last.add(name)
            elif name and shape is not None and len(shape) >= 2:
                ids = self.fresh(node, np.zeros(shape[1]), prunable=False)
            elif name and shape is None and self.filter_count(node, self.index) is not None:
                # a producer whose output shape nothing knows: its filters are listed as kept
                ids = self.fresh(node, np.zeros(self.filter_count(node, self.index)))
            else:
                continue
            self.ids[name] = ids
            self.keep(ids, reason, node)

    def opaque_source(self, name: str, reason: str) -> None:
        shape = self.shapes.get(name)
        if shape is not None and len(shape) >= 2:
            ids = self.fresh(None, np.zeros(shape[1]), prunable=False)
            self.ids[name] = ids
            self.keep(ids, reason, None)
