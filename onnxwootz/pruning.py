"""`apply`: structural L1 filter pruning of a model for one configuration, without training.
Writes the pruned model and PLAN.json (the configuration and every tensor that was sliced)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from onnxwootz.core.atomic import write_json
from onnxwootz.core.errors import BadSpecError
from onnxwootz.core.modelio import save_model
from onnxwootz.core.results import Result
from onnxwootz.core.weightfile import stored_apart
from onnxwootz.counting import count
from onnxwootz.passes.base import PassManager
from onnxwootz.passes.export import export_options
from onnxwootz.passes.canonicalize import strip_metadata
from onnxwootz.passes.block_slice import slice_span
from onnxwootz.passes.plan import PLAN_SCHEMA, plan_slices
from onnxwootz.passes.prune import FilterPrune, group_keep_counts, select_removed
from onnxwootz.passes.units import Span
from onnxwootz.prepared import ModelSource, PreparedModel, model_label, prepare
from onnxwootz.verify import verify_pruned

ConfigSource = float | dict[str, float] | Sequence[float] | str | os.PathLike[str]


@dataclasses.dataclass
class UnitChannels:
    name: str
    rate: float
    channels: int
    kept: int


@dataclasses.dataclass
class PrunedModel:
    """A pruned model in memory with its plan and costs."""

    model: onnx.ModelProto
    config: dict[str, float]
    slices: list[dict]  # PLAN.json's entries (passes/plan.py)
    canonical_slices: dict[str, list[dict]]
    units: list[UnitChannels]
    params: int
    macs: int
    removed: np.ndarray  # per atom of the analysis: True where the filter was removed

    def kept_channels(self, prepared: PreparedModel, tensor: str) -> np.ndarray | None:
        """Indices of the teacher's channels of `tensor` that survive (None: not a channel tensor)."""
        ids = prepared.analysis.ids.get(tensor)
        return None if ids is None else np.nonzero(~self.removed[ids])[0]

    def span_model(self, prepared: PreparedModel, span: Span) -> tuple[onnx.ModelProto, list[np.ndarray | None]]:
        """A block's student: `span` of this pruned model as a standalone graph (its inputs are
        the entries it needs), and per exit the teacher channels it keeps (None: all)."""
        shapes, keeps = dict(prepared.shapes), []
        for exit_ in span.exits:
            keep = self.kept_channels(prepared, exit_)
            shape = prepared.shapes[exit_]
            axis = prepared.analysis.channel_axis(exit_, len(shape))
            if keep is not None and len(keep) < shape[axis]:
                shapes[exit_] = [*shape[:axis], len(keep), *shape[axis + 1:]]
                keeps.append(keep)
            else:
                keeps.append(None)
        return slice_span(self.model, span.entries, span.exits, shapes), keeps


@dataclasses.dataclass
class ApplyResult(Result):
    model: str
    output: str | None
    plan: str | None
    granularity: str
    config: dict[str, float]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    units: list[UnitChannels]
    verified: str | None  # what showed the pruned model == the masked original: "onnxruntime", "reference", None
    verification: str | None  # why it could not be verified (verified is None)


def resolve_config(prepared: PreparedModel, granularity: str, source: ConfigSource) -> dict[str, float]:
    """A uniform rate, a {unit: rate} mapping, a list of rates in unit order, or a JSON file
    holding either of the latter two or a PLAN.json written for this model (its config; its
    slices must name what this model has)."""
    names = [unit.name for unit in prepared.units(granularity).units]
    if isinstance(source, (str, os.PathLike)) and not isinstance(source, float):
        path = Path(source)
        if not path.is_file():
            raise BadSpecError(f"configuration file not found: {path}")
        try:
            source = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadSpecError(f"{path} is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from None
    if isinstance(source, bool):
        raise BadSpecError("a rate must be a number in [0, 1)")
    if isinstance(source, (int, float)):
        if not 0.0 <= float(source) < 1.0:
            raise BadSpecError(f"--rate must be in [0, 1), got {source}")
        return {name: float(source) for name in names}
    if isinstance(source, dict) and "slices" in source:
        source = _plan_config(prepared, source)
    if isinstance(source, dict):
        return {str(k): v for k, v in source.items()}
    if isinstance(source, (list, tuple)):
        if len(source) != len(names):
            raise BadSpecError(f"configuration has {len(source)} rates but the model has {len(names)} units "
                               f"({granularity} granularity)")
        return dict(zip(names, source))
    raise BadSpecError("a configuration is a rate, a {unit: rate} object or a list of rates in unit order")


def _plan_config(prepared: PreparedModel, plan: dict) -> dict[str, float]:
    """The configuration of a PLAN.json (schema 1 or 2), once its slices are known to read
    unambiguously onto this model."""
    schema = plan.get("schema", 1)
    if schema not in (1, PLAN_SCHEMA) or not isinstance(plan.get("config"), dict) \
            or isinstance(plan["slices"], dict) != (schema == 1):
        raise BadSpecError(f"PLAN.json needs a 'config' object and schema 1 or {PLAN_SCHEMA}, got schema {schema!r}")
    plan_slices(prepared.model, plan["slices"])
    return plan["config"]


def prune_prepared(prepared: PreparedModel, config: dict[str, float], granularity: str = "module",
                   round_to: int = 1) -> PrunedModel:
    """Prune a prepared model in memory (the prepared model is not changed)."""
    plan = prepared.units(granularity)
    keep = group_keep_counts(prepared.analysis, plan, config, round_to)
    removed = select_removed(prepared.analysis, keep)
    model = onnx.ModelProto()
    model.CopyFrom(prepared.model)
    step = FilterPrune(prepared.analysis, removed, prepared.shapes)
    model = PassManager([step]).call(model).model
    strip_metadata(model)
    outcome = step.outcome
    units = []
    for unit in plan.units:
        kept = sum(outcome.group_channels[g][0] for g in unit.groups)
        total = sum(outcome.group_channels[g][1] for g in unit.groups)
        units.append(UnitChannels(unit.name, float(config.get(unit.name, 0.0)), total, kept))
    params, macs, _ = count(model, _pruned_shapes(prepared, model, removed))
    return PrunedModel(model, {u.name: u.rate for u in units}, outcome.slices, outcome.canonical_slices, units, params,
                       macs, removed)


def _pruned_shapes(prepared: PreparedModel, model: onnx.ModelProto, removed: np.ndarray) -> dict[str, list[int]]:
    """Shapes after pruning without a second shape inference: a channel tensor keeps the
    channels its atoms kept (flattened features included), weights have their sliced dims."""
    shapes = dict(prepared.shapes)
    for name, ids in prepared.analysis.ids.items():
        shape = shapes.get(name)
        axis = prepared.analysis.channel_axis(name, len(shape)) if shape is not None else 1
        if shape is not None and len(shape) > 1 and shape[axis] == len(ids):
            shapes[name] = [*shape[:axis], int((~removed[ids]).sum()), *shape[axis + 1:]]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def apply(model: ModelSource, rate: float | None = None, config: ConfigSource | None = None,
          granularity: str = "module", round_to: int = 1, output: str | os.PathLike[str] | None = None,
          plan: str | os.PathLike[str] | None = None, input_shape: Sequence[int] | None = None,
          fold_bn: bool = False, opset: int | None = None) -> ApplyResult:
    """Prune `model` by a uniform `rate` or a `config`; write OUT and PLAN.json when given.
    Export options: fold BatchNorm into the preceding convs, convert to a target opset. The
    weights stay in the input's files until written (core/weightfile.py); a model whose weights
    were stored as external data is written with external data too. Before
    anything is written the result is checked against the masked original (onnxwootz.verify):
    a PruningError when it fails; `verified` says what checked it."""
    if (rate is None) == (config is None):
        raise BadSpecError("give exactly one of --rate or --config")
    if round_to < 1:
        raise BadSpecError(f"--round-to must be a positive integer, got {round_to}")
    prepared = prepare(model, input_shape, lazy=True)
    resolved = resolve_config(prepared, granularity, rate if rate is not None else config)
    pruned = prune_prepared(prepared, resolved, granularity, round_to)
    final = export_options(pruned.model, fold_bn, opset) if fold_bn or opset else pruned.model
    verification = verify_pruned(prepared.model, final, pruned.canonical_slices, prepared.feed_shapes)
    if output is not None:
        apart = not isinstance(model, onnx.ModelProto) and stored_apart(prepared.model, model)
        save_model(final, output, external=True if apart else None)
    if plan is not None:
        write_json(plan, {"schema": PLAN_SCHEMA, "config": pruned.config, "slices": pruned.slices})
    return ApplyResult(
        model=model_label(model), output=str(output) if output is not None else None,
        plan=str(plan) if plan is not None else None, granularity=granularity, config=pruned.config,
        params_before=prepared.params, params_after=pruned.params, macs_before=prepared.macs,
        macs_after=pruned.macs, units=pruned.units, verified=verification.by, verification=verification.reason,
    )
