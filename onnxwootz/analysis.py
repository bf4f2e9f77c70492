"""`analyze`: what is in a model, what it costs, and how it can be pruned (units and the
channel groups that are kept, each with its reason)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Sequence

from onnxwootz.core.results import Result
from onnxwootz.prepared import ModelSource, PreparedModel, model_label, prepare


@dataclasses.dataclass
class TensorInfo:
    name: str
    shape: list[int | str]


@dataclasses.dataclass
class LayerCost:
    node: str
    op: str
    params: int
    macs: int


@dataclasses.dataclass
class UnitInfo:
    name: str
    label: str
    groups: list[int]
    channels: int
    params: int
    macs: int


@dataclasses.dataclass
class KeptGroup:
    group: int
    channels: int
    producers: list[str]
    reason: str


@dataclasses.dataclass
class AnalysisResult(Result):
    model: str
    opset: int
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    ops: dict[str, int]
    params: int
    macs: int
    heaviest: list[LayerCost]
    granularity: str
    groups: int
    units: list[UnitInfo]
    kept_groups: list[KeptGroup]


def _declared(value) -> list[int | str]:
    dims = value.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def unit_infos(prepared: PreparedModel, granularity: str) -> list[UnitInfo]:
    plan = prepared.units(granularity)
    cost = {c.name: c for c in prepared.costs}
    infos = []
    for unit in plan.units:
        nodes = unit.nodes if granularity == "module" else [
            p for g in unit.groups for p in prepared.analysis.groups[g].producers]
        infos.append(UnitInfo(
            unit.name, unit.label, unit.groups, sum(prepared.analysis.groups[g].channels for g in unit.groups),
            sum(cost[n].params for n in nodes if n in cost), sum(cost[n].macs for n in nodes if n in cost)))
    return infos


def analyze(model: ModelSource, input_shape: Sequence[int] | None = None, granularity: str = "module",
            top: int = 10) -> AnalysisResult:
    """Analyze a model (path or ModelProto) for pruning."""
    from onnxwootz.core.onnx_helpers import onnx_opset, real_inputs

    prepared = prepare(model, input_shape, lazy=True)
    m = prepared.model
    plan = prepared.units(granularity)
    heaviest = sorted(prepared.costs, key=lambda c: (c.macs, c.params), reverse=True)[:top]
    kept = [KeptGroup(gid, prepared.analysis.groups[gid].channels, prepared.analysis.groups[gid].producers, reason)
            for gid, reason in sorted(plan.kept.items()) if prepared.analysis.groups[gid].producers]
    return AnalysisResult(
        model=model_label(model),
        opset=onnx_opset(m),
        inputs=[TensorInfo(v.name, _declared(v)) for v in real_inputs(m)],
        outputs=[TensorInfo(v.name, _declared(v)) for v in m.graph.output],
        ops=dict(Counter(node.op_type for node in m.graph.node).most_common()),
        params=prepared.params,
        macs=prepared.macs,
        heaviest=[LayerCost(c.name, c.op_type, c.params, c.macs) for c in heaviest],
        granularity=granularity,
        groups=len(prepared.analysis.groups),
        units=unit_infos(prepared, granularity),
        kept_groups=kept,
    )


def unit_names(model: ModelSource, granularity: str = "module", input_shape: Sequence[int] | None = None) -> list[str]:
    """The model's unit names in order (configurations list one rate per unit)."""
    return [unit.name for unit in prepare(model, input_shape).units(granularity).units]
