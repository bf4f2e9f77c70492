"""`prune`: the whole Wootz method on an ONNX teacher.

analyze -> promising subspace -> tuning blocks (Sequitur) -> block pre-training (teacher-
student, multiplexed; lazily, when the first candidate that needs a block is reached) ->
explore candidates in objective order: assemble from pre-trained blocks (uncovered units keep
L1-pruned teacher weights), evaluate, fine-tune only if needed, stop at the first that meets
the constraint -> write the answer as ONNX (checked, ORT == torch) and a summary.
Candidates are held to the run's metric (onnxwootz.metrics: top-1 accuracy, agreement with the
teacher, output fidelity, map IoU, text accuracy) on the validation split, which makes every
decision; the held-out test split only reports the answer's and the teacher's figures.
With `baseline=True` every candidate starts from L1-pruned teacher weights (the paper's
"default"), so the method's gain is measured on the same candidates, seeds and budget.
Parts: the run's fixed state is a RunContext (onnxwootz.context), blocks are pre-trained by a
BlockTrainer (onnxwootz.blocks_training), candidates are run by a CandidateEvaluator
(onnxwootz.candidates), the journal's events are typed (onnxwootz.events); this module samples
and orders the candidates, hands them to an executor and writes the summary."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any


from onnxwootz.context import RunContext, open_run
from onnxwootz.events import BlockEvent, TrialEvent
from onnxwootz.metrics import MetricFunction
from onnxwootz.core.progress import NULL_PROGRESS, Progress
from onnxwootz.core.results import Result
from onnxwootz.spec import Spec, load_spec

if TYPE_CHECKING:
    from onnxwootz.executors import Executor


@dataclasses.dataclass
class PruneResult(Result):
    teacher: str
    model: str | None
    run_dir: str
    mode: str
    objective: str
    constraint: str
    teacher_accuracy: float
    bound: float
    bound_margin: float
    confirm_teacher_metric: float | None
    confirm_bound: float | None
    accuracy: float | None
    max_accuracy_drop: float
    params: int | None
    macs: int | None
    teacher_params: int
    teacher_macs: int
    candidates: int
    candidates_tried: int
    blocks: int
    blocks_trained: int
    pretrain_seconds: float
    wall_seconds: float
    trials: list[TrialEvent]
    metric: str
    teacher_test_metric: float
    test_metric: float | None
    splits: dict[str, int]
    preprocess: dict[str, Any] | None
    input_shape: list[int]


def prune(model: str | os.PathLike[str], data: str | None = None, spec: Spec | str | os.PathLike[str] | None = None,
          run_dir: str | os.PathLike[str] | None = None, output: str | os.PathLike[str] | None = None,
          fresh: bool = False, progress: Progress = NULL_PROGRESS, executor: "Executor | None" = None,
          metric: str | MetricFunction | None = None, **overrides: Any) -> PruneResult:
    """Run the method (or the baseline, `baseline=True`) on a teacher ONNX file. Candidates run
    on `executor` (default: one after another in this process; see onnxwootz.executors).
    `metric` is a registry name (onnxwootz.metrics) or a callable (student outputs, teacher
    outputs, labels or None) -> float, higher is better; the constraint then reads `accuracy`."""
    import torch

    from onnxwootz.executors import LocalExecutor

    started = time.perf_counter()
    function = None
    if callable(metric):
        function, metric = metric, None
    if not isinstance(spec, Spec):
        spec = load_spec(spec, metric=metric, **overrides)
    elif overrides or metric is not None:
        values = {k: v for k, v in {**overrides, "metric": metric}.items() if v is not None}
        spec = dataclasses.replace(spec, **values).validate()
    threads = torch.get_num_threads()
    context = None
    try:
        context = open_run(Path(model), data, spec, run_dir, fresh, progress, function, output)
        return Explorer(context).run(executor or LocalExecutor(), started)
    finally:
        torch.set_num_threads(threads)
        if context is not None:
            context.rundir.close()


class Explorer:
    """One run's exploration over its context: the candidates (sampled once, journaled), their
    tuning blocks and block trainer (method mode), and the candidate evaluator. Executors drive
    it; building it is deterministic, so a Ray worker builds the same one."""

    def __init__(self, context: RunContext):
        from onnxwootz.blocks_training import BlockTrainer
        from onnxwootz.candidates import CandidateEvaluator
        from onnxwootz.tuning_blocks import identify_blocks

        self.context = context
        self.configs = _configs(context)
        self.blockset = identify_blocks(self.configs, None, context.spec.blocks) if context.mode == "method" else None
        self.blocks = BlockTrainer(context, self.blockset) if self.blockset is not None else None
        self.candidates = CandidateEvaluator(context, self.configs, self.blockset)

    def ensure_blocks(self, candidate: int) -> None:
        """The blocks candidate `candidate` needs, pre-trained when first reached (lazy)."""
        if self.blocks is not None:
            self.blocks.ensure(candidate)

    def run(self, executor: "Executor", started: float) -> PruneResult:
        """Order, eager pre-training, exploration, summary; `started` (a perf_counter value) is
        when `prune` was called, so the wall clock includes loading the teacher and the data."""
        context, spec = self.context, self.context.spec
        order = _order(context, self.configs)
        if self.blocks is not None:
            context.rundir.write_json("blocks.json", {
                "blocks": [dataclasses.asdict(b) for b in self.blockset.blocks],
                "networks": [dataclasses.asdict(c) for c in self.blockset.composites]})
            if spec.pretrain == "eager":
                self.blocks.train(range(len(self.blockset.blocks)))
        answer = executor.explore(self, order)
        trials = [TrialEvent.from_event(e) for e in context.rundir.all("trial") if e["mode"] == context.mode]
        blocks_trained = [BlockEvent.from_event(e) for e in context.rundir.all("block")]
        prepared, confirmation = context.prepared, context.confirmation
        result = PruneResult(
            teacher=str(context.model_path), model=str(context.answer_path) if answer else None,
            run_dir=str(context.rundir.path), mode=context.mode, objective=spec.objective, constraint=spec.constraint,
            teacher_accuracy=context.teacher_accuracy, bound=context.bound, bound_margin=spec.bound_margin,
            confirm_teacher_metric=confirmation.teacher_metric if confirmation else None,
            confirm_bound=confirmation.bound if confirmation else None,
            accuracy=answer.accuracy if answer else None, max_accuracy_drop=context.teacher_accuracy - context.bound,
            params=answer.params if answer else None, macs=answer.macs if answer else None,
            teacher_params=prepared.params, teacher_macs=prepared.macs, candidates=len(self.configs),
            candidates_tried=len(trials), blocks=len(self.blockset.blocks) if self.blockset else 0,
            blocks_trained=len(blocks_trained), pretrain_seconds=sum(float(e.seconds) for e in blocks_trained),
            wall_seconds=time.perf_counter() - started, trials=trials, metric=context.metric.name,
            teacher_test_metric=context.teacher_test_metric,
            test_metric=self.candidates.test_metric() if answer else None, splits=context.dataset.splits,
            preprocess=context.preprocess.to_dict(), input_shape=context.input_shape)
        context.rundir.write_json("summary.json", result.to_dict())
        return result


# -- the candidates: sampled (or given), ordered by the objective ----------------------------------
def _configs(context: RunContext) -> list[list[float]]:
    """The run's candidate configurations: as journaled, else given, else sampled (spread, or
    around the measured sensitivity profile), then written to the run directory."""
    from onnxwootz.configs import load_configs
    from onnxwootz.sampling import PROFILE_MAX_DROP, sample_configurations, sample_profile_configurations

    spec, rundir = context.spec, context.rundir
    stored = rundir.path / "configs.json"
    if stored.exists():
        return load_configs(stored, len(context.units))

    def size_of(rates: list[float]) -> float:
        return context.costs.estimate(rates)[0]

    if spec.configs:
        configs = load_configs(spec.configs, len(context.units))
    elif spec.subspace == "profile":
        profile = _sensitivity(context)
        allowed = max(profile.teacher - context.bound, 0.0)  # the constraint's drop, on the profile's images
        budget = math.inf if spec.profile_budget is None else spec.profile_budget * allowed
        configs = sample_profile_configurations(spec.candidates, profile.drops(), spec.rates, size_of, spec.seed,
                                                max_drop=PROFILE_MAX_DROP * profile.headroom, max_total_drop=budget)
    else:
        configs = sample_configurations(spec.candidates, len(context.units), spec.rates, size_of, spec.seed)
    rundir.write_json("configs.json", configs)
    return configs


def _sensitivity(context: RunContext):
    """Each unit's drop in the run's metric when it alone is pruned (L1, or with
    `profile_init lsq` from its block's least-squares start), on the validation split (once per
    run: the measurement is journaled, and counted in the run's time). L1 stays the default:
    on PP-OCRv4's recognizer the refitted profile shows every unit nearly harmless at 0.5, the
    sampler then drew all-0.5 candidates whose damage compounds (0.0 exact strings assembled)
    unless `profile_budget` holds their summed drops down, and it costs more (658 s against
    about 540 for L1 alone)."""
    from onnxwootz.blocks_training import RECONSTRUCTION_IMAGES
    from onnxwootz.sensitivity import measure_sensitivity

    spec, dataset = context.spec, context.dataset
    labels = dataset.y_val if context.metric.labels else None
    refit = dataset.x_inputs[:RECONSTRUCTION_IMAGES] if spec.profile_init == "lsq" else None
    measured = measure_sensitivity(context.prepared, dataset.x_val, labels, spec.rates, spec.granularity,
                                   spec.round_to, metric=context.metric, refit_images=refit)
    context.rundir.write_json("sensitivity.json", measured.to_dict())
    context.rundir.record({"event": "sensitivity", "seconds": measured.seconds})
    return measured


def _order(context: RunContext, configs: list[list[float]]) -> list[int]:
    key = context.spec.objective_key()
    if key == "latency":
        values = [_latency(context, i, rates) for i, rates in enumerate(configs)]
    else:
        values = [context.costs.estimate(rates)[0 if key == "size" else 1] for rates in configs]
    return sorted(range(len(configs)), key=lambda i: (values[i], i))


def _latency(context: RunContext, index: int, rates: list[float]) -> float:
    """Measured once per candidate before any training, cached in the journal."""
    from onnxwootz.pruning import prune_prepared
    from onnxwootz.runtime.bench import bench

    event = context.rundir.find("latency", candidate=index)
    if event is None:
        started = time.perf_counter()
        spec = context.spec
        pruned = prune_prepared(context.prepared, dict(zip(context.unit_names, rates)), spec.granularity,
                                spec.round_to)
        result = bench([pruned.model], provider=spec.provider, batches=(1,), warmup=3, runs=20)
        event = {"event": "latency", "candidate": index, "p50_ms": result.entries[0].p50_ms,
                 "seconds": time.perf_counter() - started}
        context.rundir.record(event)
    return float(event["p50_ms"])
