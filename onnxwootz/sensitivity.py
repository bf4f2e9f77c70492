"""Per-unit pruning sensitivity, measured once: how much the metric drops when one unit alone is
L1-pruned at each rate, with no training. Pruning-rate search tools start from this profile
(the promising subspace the paper takes as given comes from such tools), and the profile
sampler (onnxwootz.sampling.sample_profile_configurations) draws configurations around it.

Cost: one ONNX Runtime evaluation of the teacher plus units x rates evaluations of L1-pruned
copies on the validation images. With refit images (what `prune` passes with `profile_init
lsq`) each pruned copy first gets its block's least-squares start (the teacher's tensors
computed once per unit, for all its rates: runtime.reconstruction.TeacherTargets), so
the profile measures what the method starts from: L1 alone overstates the damage of a chain
unit, whose pruned channels are read by the next module's conv (a PP-OCRv4 recognizer unit at
0.2: 0.01 exact strings L1-pruned, 0.99 refitted), and the sampler would leave it out. The metric is top-1 accuracy against class labels, or, with
no class labels (label-free or text-labelled data), agreement with the teacher's top-1 (over
the last output axis, so a sequence model agrees per position)."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Sequence

import numpy as np
import onnx

from onnxwootz.configs import checked_rate
from onnxwootz.core.errors import BadDataError, BadSpecError
from onnxwootz.core.results import Result
from onnxwootz.metrics import Metric, agreement, class_scores, top1
from onnxwootz.prepared import ModelSource, PreparedModel, model_label, prepare

if TYPE_CHECKING:
    from onnxwootz.pruning import PrunedModel
    from onnxwootz.runtime.reconstruction import TeacherTargets

EVAL_BATCH = 256
"""Images per ONNX Runtime call when the model's batch dimension is dynamic."""


@dataclasses.dataclass
class UnitSensitivity:
    """One unit's metric (and its drop from the teacher's) with only this unit pruned, per rate
    (in the order of `Sensitivity.rates`)."""

    name: str
    metric: list[float]
    drop: list[float]


@dataclasses.dataclass
class Sensitivity(Result):
    """`metric` is the run's metric (default 'accuracy' against class labels, else 'agreement'
    with the teacher's top-1, so the teacher scores 1.0). `floor` is what a model that has lost
    everything scores: chance (1 / classes) for a metric on class scores, else 0. `seconds`
    covers the pruning and the evaluations."""

    model: str
    metric: str
    teacher: float
    rates: list[float]
    images: int
    units: list[UnitSensitivity]
    seconds: float
    floor: float = 0.0

    @property
    def headroom(self) -> float:
        """How much of the metric the teacher has to lose: its score above the floor."""
        return max(self.teacher - self.floor, 0.0)

    def drops(self) -> list[dict[float, float]]:
        """Per unit, rate -> drop: the profile `sample_profile_configurations` takes."""
        return [dict(zip(self.rates, unit.drop)) for unit in self.units]


def measure_sensitivity(prepared: PreparedModel, x: np.ndarray, labels: np.ndarray | None = None,
                        rates: Sequence[float] = (0.3, 0.5, 0.7), granularity: str = "module", round_to: int = 1,
                        threads: int = 0, metric: Metric | None = None,
                        refit_images: np.ndarray | None = None) -> Sensitivity:
    """The profile of `prepared` on images `x` (preprocessed model inputs): for every unit and
    rate, the model with that unit alone L1-pruned at that rate (and, given `refit_images` at
    module granularity, its block span refitted by least squares on them), evaluated with ONNX
    Runtime by `metric` (the run's; default top-1 accuracy with class labels, else agreement
    with the teacher), so that a detector is profiled by what its bound reads, not by an
    arg-max."""
    from onnxwootz.pruning import prune_prepared
    from onnxwootz.runtime.reconstruction import TeacherTargets

    started = time.perf_counter()
    checked = sorted({checked_rate(rate) for rate in rates} - {0.0})  # rate 0 is the teacher itself
    if not checked:
        raise BadSpecError("sensitivity needs at least one pruning rate above 0")
    if len(x) == 0:
        raise BadDataError("sensitivity needs at least one validation image")
    if metric is None:
        metric = Metric("accuracy", "class", top1) if labels is not None else Metric("agreement", None, agreement)
    if metric.labels == "class":
        labels = np.asarray(labels) if labels is not None else None
        if labels is None or not np.issubdtype(labels.dtype, np.integer) or labels.shape != (len(x),):
            raise BadDataError(f"sensitivity labels must be {len(x)} class indices, got "
                               f"{'none' if labels is None else f'{labels.dtype} {list(labels.shape)}'}")
    names = [unit.name for unit in prepared.units(granularity).units]
    if not names:
        raise BadSpecError(f"{prepared.label} has no prunable units (see `onnxwootz analyze`)")
    reference = _outputs(prepared.model, x, threads)
    if metric.labels == "class" and len(class_scores(reference)) != len(labels):
        raise BadDataError("class labels need one class-score row per image (an output [N, classes])")
    teacher = metric(reference, reference, labels)
    floor = 1.0 / class_scores(reference).shape[1] if metric.function in (top1, agreement) else 0.0
    refit = refit_images is not None and granularity == "module"
    units = []
    for position, name in enumerate(names):
        values = []
        targets = TeacherTargets(prepared.model, refit_images, threads=threads) if refit else None  # one per span
        for rate in checked:
            config = {other: 0.0 for other in names}
            config[name] = rate
            pruned = prune_prepared(prepared, config, granularity, round_to)
            if targets is not None:
                _refit_block(prepared, pruned, position, targets)
            values.append(metric(_outputs(pruned.model, x, threads), reference, labels))
        units.append(UnitSensitivity(name, values, [teacher - value for value in values]))
    return Sensitivity(model=prepared.label, metric=metric.name, teacher=teacher, rates=checked, images=len(x),
                       units=units, seconds=time.perf_counter() - started, floor=floor)


def profile(model: ModelSource | PreparedModel, data: str | None = None, rates: Sequence[float] = (0.3, 0.5, 0.7),
            granularity: str = "module", seed: int = 0, threads: int = 0) -> Sensitivity:
    """The profile of a teacher on the validation split of its dataset (`data`, or the one its
    metadata names), preprocessed by the model's own contract, as `prune` loads it."""
    from onnxwootz.data import load_dataset
    from onnxwootz.preprocess import Preprocess, dataset_of

    prepared = model if isinstance(model, PreparedModel) else prepare(model)
    preprocess = Preprocess.from_model(prepared.model)
    if preprocess is None:
        raise BadSpecError(f"{prepared.label} has no 'onnxwootz.preprocess' metadata: the tool cannot know how to "
                           "feed it images (see the README for the format)")
    data = data or dataset_of(prepared.model)
    if data is None:
        raise BadSpecError(f"{prepared.label} does not name its dataset in its metadata: pass the data "
                           "('digits', a directory or an .npz file)")
    out_shape = prepared.shapes[prepared.model.graph.output[0].name]
    dataset = load_dataset(data, preprocess, int(out_shape[-1]), seed)
    labels = dataset.y_val if dataset.labels == "class" else None
    return measure_sensitivity(prepared, dataset.x_val, labels, rates, granularity, threads=threads)


def _refit_block(prepared: PreparedModel, pruned: PrunedModel, unit: int, targets: TeacherTargets) -> None:
    """Give the pruned model the least-squares start of unit `unit`'s block span, in place."""
    from onnx import numpy_helper

    from onnxwootz.passes.graph_index import replace_initializer
    from onnxwootz.runtime.reconstruction import reconstruct_span

    student, _ = pruned.span_model(prepared, prepared.units("module").span(unit, unit + 1))
    entries = [value.name for value in student.graph.input]
    if reconstruct_span(targets, student, entries, pruned.canonical_slices):
        for init in student.graph.initializer:
            replace_initializer(pruned.model, init.name, numpy_helper.to_array(init))


def _outputs(model: onnx.ModelProto, x: np.ndarray, threads: int) -> list[np.ndarray]:
    """Every output of `model` on all of `x`, in batches the model's input allows."""
    from onnxwootz.runtime.sessions import cpu_session

    session = cpu_session(model, threads)
    feed = session.get_inputs()[0]
    fixed = feed.shape[0] if feed.shape and isinstance(feed.shape[0], int) and feed.shape[0] > 0 else None
    batch = fixed or EVAL_BATCH
    if fixed is not None and len(x) % fixed:
        raise BadDataError(f"{model_label(model)} takes batches of exactly {fixed} images; "
                           f"{len(x)} validation images do not divide into them")
    parts = [session.run(None, {feed.name: np.ascontiguousarray(x[start:start + batch])})
             for start in range(0, len(x), batch)]
    return [np.concatenate([part[i] for part in parts]) for i in range(len(parts[0]))]
