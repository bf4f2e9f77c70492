"""Fast cost estimates for configurations, without slicing a graph: every node's params and
MACs scale with the kept fraction of its output channels (and of its input channels for
convs that mix channels and matmuls). Used to sample and order hundreds of candidates in milliseconds."""

from __future__ import annotations

import dataclasses

import numpy as np

from onnxwootz.passes.ops import mixes_channels
from onnxwootz.passes.prune import group_keep_counts
from onnxwootz.prepared import PreparedModel


@dataclasses.dataclass
class _NodeTerm:
    params: int  # weights: scale with output and input channels
    other: int  # biases and per-channel parameters: scale with output channels only
    macs: int
    out: dict[int, int]  # group -> channel count on the output
    inp: dict[int, int] | None  # same for the input, when the cost scales with it


def _composition(prepared: PreparedModel, name: str) -> dict[int, int]:
    ids = prepared.analysis.ids.get(name)
    if ids is None:
        return {}
    groups, counts = np.unique(prepared.analysis.atom_group[ids], return_counts=True)
    return dict(zip(groups.tolist(), counts.tolist()))


class CostModel:
    def __init__(self, prepared: PreparedModel, granularity: str = "module", round_to: int = 1):
        self.prepared = prepared
        self.granularity = granularity
        self.round_to = round_to
        self.unit_names = [unit.name for unit in prepared.units(granularity).units]
        self.group_totals = {g.id: g.channels for g in prepared.analysis.groups}
        nodes = {node.name: node for node in prepared.model.graph.node}
        self.terms = []
        self.fixed_params = prepared.params - sum(c.params for c in prepared.costs)
        for cost in prepared.costs:
            if not cost.params and not cost.macs:
                continue
            node = nodes[cost.name]
            shape = prepared.shapes.get(node.input[1]) if len(node.input) > 1 else None
            # the cost of a layer that mixes channels scales with its kept inputs; a depthwise
            # conv loses whole groups with its outputs
            dense = mixes_channels(node, shape)
            weight = shape if dense else None
            weight_params = min(int(np.prod(weight)), cost.params) if weight else 0
            self.terms.append(_NodeTerm(weight_params, cost.params - weight_params, cost.macs,
                                        _composition(prepared, node.output[0]),
                                        _composition(prepared, node.input[0]) if dense else None))

    def _fraction(self, composition: dict[int, int] | None, kept: dict[int, int]) -> float:
        if not composition:
            return 1.0
        total = sum(composition.values())
        return sum(n * kept.get(g, self.group_totals[g]) / self.group_totals[g] for g, n in composition.items()) / total

    def estimate(self, rates: list[float]) -> tuple[int, int]:
        """(params, MACs) of the model pruned with `rates` in unit order."""
        config = dict(zip(self.unit_names, rates))
        kept = group_keep_counts(self.prepared.analysis, self.prepared.units(self.granularity), config,
                                 self.round_to)
        params = float(self.fixed_params)
        macs = 0.0
        for term in self.terms:
            out = self._fraction(term.out, kept)
            factor = out * self._fraction(term.inp, kept)
            params += term.params * factor + term.other * out
            macs += term.macs * factor
        return int(round(params)), int(round(macs))
