"""A model made ready for analysis once: loaded, canonicalized, shapes known, channel groups
found. Every command that needs groups or units starts here."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

import onnx

from onnxwootz.core.errors import BadSpecError
from onnxwootz.core.modelio import CANONICAL_OPSET, load_model, upgrade_opset
from onnxwootz.core.onnx_helpers import input_shapes, onnx_opset
from onnxwootz.counting import NodeCost, count
from onnxwootz.passes.canonicalize import canonicalize, shuffles_to_gathers, strided_identities
from onnxwootz.passes.channel_groups import ChannelAnalysis, analyze_channels
from onnxwootz.passes.units import GRANULARITIES, UnitPlan, plan_units
from onnxwootz.runtime.shapes import static_shapes

ModelSource = str | os.PathLike[str] | onnx.ModelProto


@dataclasses.dataclass
class PreparedModel:
    label: str
    model: onnx.ModelProto  # canonical
    feed_shapes: dict[str, list[int]]
    shapes: dict[str, list[int]]
    analysis: ChannelAnalysis
    params: int
    macs: int
    costs: list[NodeCost]
    _units: dict[str, UnitPlan] = dataclasses.field(default_factory=dict, repr=False)

    def units(self, granularity: str) -> UnitPlan:
        if granularity not in GRANULARITIES:
            raise BadSpecError(f"--granularity must be one of {', '.join(GRANULARITIES)}, got '{granularity}'")
        if granularity not in self._units:
            self._units[granularity] = plan_units(self.model, self.analysis, granularity, self.shapes)
        return self._units[granularity]


def load_source(source: ModelSource, lazy: bool = False) -> tuple[onnx.ModelProto, str]:
    """A path (loaded safely; with `lazy`, its weights left in their files) or an in-memory
    model (copied, opset brought up)."""
    if isinstance(source, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(source)
        if onnx_opset(model) < CANONICAL_OPSET:
            model = upgrade_opset(model, CANONICAL_OPSET)
        return model, model.graph.name or "model"
    return load_model(source, lazy=lazy), str(source)


def prepare(source: ModelSource, input_shape: Sequence[int] | None = None, lazy: bool = False) -> PreparedModel:
    """`lazy`: the weights of a model read from a file stay there (core/weightfile.py), for
    commands that read them once and write a model (analyze, apply)."""
    model, label = load_source(source, lazy)
    model = canonicalize(model)
    feed = input_shapes(model, input_shape)
    shapes = static_shapes(model, feed)
    rewritten = shuffles_to_gathers(model, shapes)
    if strided_identities(model, shapes) or rewritten:  # canonicalize again: fold what reads a Gather's count
        model = canonicalize(model)
        shapes = static_shapes(model, feed)
    analysis = analyze_channels(model, shapes)
    params, macs, costs = count(model, shapes)
    return PreparedModel(label, model, feed, shapes, analysis, params, macs, costs)


def model_label(source: ModelSource) -> str:
    return source.graph.name if isinstance(source, onnx.ModelProto) else Path(source).name
