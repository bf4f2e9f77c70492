"""The filter-pruning pass: a configuration (unit -> rate) becomes, per channel group, the
channels with the smallest summed L1 norm removed; every affected tensor is sliced and the
slices are recorded as a plan (PLAN.json) in the names of the input model (passes/plan.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx

from onnxwootz.core.errors import BadSpecError
from onnxwootz.passes.base import Pass, PassResult
from onnxwootz.passes.channel_groups import ChannelAnalysis
from onnxwootz.passes.plan import plan_entries
from onnxwootz.passes.slicing import Slicer
from onnxwootz.passes.units import UnitPlan


def kept_channels(channels: int, rate: float, round_to: int = 1) -> int:
    """max(1, round((1 - rate) * channels)), optionally rounded to a multiple of round_to."""
    keep = max(1, int(round((1.0 - rate) * channels)))
    if round_to > 1:
        keep = max(round_to, int(round(keep / round_to)) * round_to)
    return min(keep, channels)


def validate_config(config: dict[str, float], units: UnitPlan) -> None:
    names = {unit.name for unit in units.units}
    unknown = sorted(set(config) - names)
    if unknown:
        raise BadSpecError(f"configuration names unknown unit(s): {', '.join(unknown[:5])}; "
                           f"known units: {', '.join(sorted(names)[:5])}{' ...' if len(names) > 5 else ''}")
    for name, rate in config.items():
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0.0 <= float(rate) < 1.0:
            raise BadSpecError(f"rate of unit '{name}' must be a number in [0, 1), got {rate!r}")


def group_keep_counts(analysis: ChannelAnalysis, units: UnitPlan, config: dict[str, float],
                      round_to: int = 1) -> dict[int, int]:
    validate_config(config, units)
    keep = {}
    for unit in units.units:
        rate = float(config.get(unit.name, 0.0))
        for group_id in unit.groups:
            group = analysis.groups[group_id]
            keep[group_id] = kept_channels(group.channels, rate, round_to)
    return keep


def select_removed(analysis: ChannelAnalysis, keep: dict[int, int]) -> np.ndarray:
    """Boolean per atom: True where the filter is removed. Within a group the channels with
    the largest summed L1 norm stay, the same share of each Split/Slice part where the group's
    channels are split (a YOLO C2f's two halves, as Torch-Pruning prunes them once the split
    conv is two convs: by L1 over the whole group, the half that also carries the bottlenecks'
    residual sums more filters per channel and was kept whole); a part never loses all its
    channels."""
    first, channel_of_atom = analysis.channel_numbers()
    part = _split_parts(analysis, channel_of_atom, first[-1])
    gone = np.zeros(first[-1], dtype=bool)  # per channel of any group
    for group_id, count in keep.items():
        group = analysis.groups[group_id]
        if count < group.channels:
            channels = first[group_id] + np.arange(group.channels)
            for members, quota in _quotas(part[channels], count):
                ranked = members[np.argsort(-group.importance[members], kind="stable")]
                gone[first[group_id] + ranked[quota:]] = True
    removed = gone[channel_of_atom]
    changed = True
    while changed:
        changed = False
        for name in analysis.split_outputs:
            ids = analysis.ids[name]
            if len(ids) and removed[ids].all():
                best = max(ids, key=lambda atom: analysis.groups[analysis.atom_group[atom]].importance[
                    analysis.atom_channel[atom]])
                group = analysis.groups[analysis.atom_group[best]]
                removed[group.channel_atoms[analysis.atom_channel[best]]] = False
                changed = True
    return removed


def _split_parts(analysis: ChannelAnalysis, channel_of_atom: np.ndarray, channels: int) -> np.ndarray:
    """Per channel of any group, the Split/Slice output it lies in (the smallest, where splits
    nest), -1 for none."""
    part = np.full(channels, -1, dtype=np.int64)
    outputs = sorted(analysis.split_outputs, key=lambda name: -len(analysis.ids[name]))
    for number, name in enumerate(outputs):
        part[channel_of_atom[analysis.ids[name]]] = number
    return part


def _quotas(labels: np.ndarray, count: int) -> list[tuple[np.ndarray, int]]:
    """The group's channels (positions) by part, each with how many of them stay: `count` shared
    in proportion to the parts' sizes (largest remainders), at least one per part."""
    names, inverse = np.unique(labels, return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(len(names))]
    if len(members) == 1:
        return [(members[0], count)]
    sizes = np.array([len(m) for m in members])
    exact = count * sizes / sizes.sum()
    quota = np.maximum(np.floor(exact).astype(np.int64), 1)
    for k in np.argsort(-(exact - np.floor(exact)), kind="stable")[:max(count - int(quota.sum()), 0)]:
        quota[k] += 1
    return list(zip(members, np.minimum(quota, sizes).tolist()))


@dataclasses.dataclass
class PruneOutcome:
    slices: list[dict]  # PLAN.json's schema-2 entries, in input-model names
    canonical_slices: dict[str, list[dict]]  # keyed by the canonical model's initializer names
    group_channels: dict[int, tuple[int, int]]  # group id -> (kept, total)


class FilterPrune(Pass):
    """Slice a canonical model according to per-atom removal decisions."""

    def __init__(self, analysis: ChannelAnalysis, removed: np.ndarray, shapes: dict[str, list[int]]):
        self.analysis = analysis
        self.removed = removed
        self.shapes = shapes
        self.outcome: PruneOutcome | None = None

    def call(self, model: onnx.ModelProto) -> PassResult:
        masks = {name: ~self.removed[ids] for name, ids in self.analysis.ids.items()}
        slicer = Slicer(model, masks, self.shapes, self.analysis.channels_last)
        slices = slicer.run()
        _, channel_of_atom = self.analysis.channel_numbers()
        heads = np.unique(channel_of_atom, return_index=True)[1]  # each channel's first atom
        lost = np.bincount(self.analysis.atom_group[heads], weights=self.removed[heads],
                           minlength=len(self.analysis.groups))
        channels = {group.id: (group.channels - int(lost[group.id]), group.channels)
                    for group in self.analysis.groups}
        entries = plan_entries(model, slices)
        slicer.replace_nodes()
        if slices:
            del model.graph.value_info[:]
        self.outcome = PruneOutcome(entries, slices, channels)
        return PassResult(model, bool(slices))
