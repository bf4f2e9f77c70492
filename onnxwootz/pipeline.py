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
"default"), so the method's gain is measured on the same candidates, seeds and budget."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import onnx

from onnxwootz.errors import BadDataError, BadSpecError
from onnxwootz.metrics import Metric, MetricFunction
from onnxwootz.modelio import real_inputs, static_dims
from onnxwootz.progress import NULL_PROGRESS, Progress
from onnxwootz.results import Result
from onnxwootz.spec import Spec, load_spec

METRIC_KEY = "onnxwootz.metric"
METRIC_VALUE_KEY = "onnxwootz.metric_value"
"""Metadata of a written answer: the metric it was held to and its validation value."""
RECONSTRUCTION_IMAGES = 256
"""Images for the least-squares start of a block: enough rows for a well-posed fit, few enough
that it costs a small fraction of pre-training."""

if TYPE_CHECKING:
    from onnxwootz.executors import Executor


@dataclasses.dataclass
class Trial:
    mode: str
    candidate: int
    rates: list[float]
    params: int
    macs: int
    latency_ms: float | None
    accuracy_at_assembly: float
    accuracy: float
    met: bool
    steps: int
    seconds: float
    blocks: list[int]
    curve: list[list[float]]


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
    trials: list[Trial]
    metric: str
    teacher_test_metric: float
    test_metric: float | None
    splits: dict[str, int]
    preprocess: dict[str, Any] | None
    input_shape: list[int]


def default_run_dir(model: str | os.PathLike[str], baseline: bool) -> Path:
    stem = Path(model).name.removesuffix(".onnx")
    return Path("runs") / (stem + ("-baseline" if baseline else ""))


def prune(model: str | os.PathLike[str], data: str | None = None, spec: Spec | str | os.PathLike[str] | None = None,
          run_dir: str | os.PathLike[str] | None = None, output: str | os.PathLike[str] | None = None,
          fresh: bool = False, progress: Progress = NULL_PROGRESS, executor: "Executor | None" = None,
          metric: str | MetricFunction | None = None, **overrides: Any) -> PruneResult:
    """Run the method (or the baseline, `baseline=True`) on a teacher ONNX file. Candidates run
    on `executor` (default: one after another in this process; see onnxwootz.executors).
    `metric` is a registry name (onnxwootz.metrics) or a callable (student outputs, teacher
    outputs, labels or None) -> float, higher is better; the constraint then reads `accuracy`."""
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
    explorer = Explorer(Path(model), data, spec, run_dir, fresh, progress, function)
    return explorer.run(output, executor or LocalExecutor(), started)


class Explorer:
    """The state of one run: the prepared teacher, data, run directory, candidates, blocks."""

    def __init__(self, model: Path, data: str | None, spec: Spec, run_dir, fresh: bool, progress: Progress,
                 metric_function: MetricFunction | None = None, worker: bool = False):
        """`worker`: a Ray worker's copy, which reads the driver's run directory (no lock, no
        writes: the driver alone keeps the journal)."""
        from onnxwootz.data import load_dataset
        from onnxwootz.journal import RunDir, fingerprint
        from onnxwootz.metrics import build_metric, check_labels, custom_metric, default_metric_name
        from onnxwootz.prepared import load_source, prepare
        from onnxwootz.preprocess import dataset_of, resolve_preprocess

        spec = _absolute_paths(spec)
        self.spec = spec
        self.progress = progress
        self.mode = "baseline" if spec.baseline else "method"
        self.model_path = model.resolve() if model.exists() else model
        source, _ = load_source(model)
        self.preprocess = resolve_preprocess(spec.preprocess, source, spec.input_shape)
        if self.preprocess is None:
            raise BadSpecError(f"{model} has no 'onnxwootz.preprocess' metadata: say how to feed it with --preprocess "
                               "(imagenet, unit, none, a JSON object or a .json file; see the README)")
        data = data or dataset_of(source)
        if data is None:
            raise BadSpecError(f"{model} does not name its dataset in its metadata: pass --data digits, "
                               "--data DIR (train/<class>/*.png, val/<class>/...) or --data FILE.npz")
        self.data_name = data
        self.data_path = Path(data).resolve().as_posix() if Path(data).exists() else data
        self.dataset = load_dataset(data, self.preprocess, num_classes=_class_count(source), seed=spec.seed)
        input_shape = list(spec.input_shape or [1, *self.dataset.x_train.shape[1:]])
        _check_fits(source, list(self.dataset.x_train.shape[1:]))
        self.prepared = prepare(source, input_shape)
        teacher = self.prepared.model
        self.input_shape = list(self.prepared.feed_shapes[next(iter(self.prepared.feed_shapes))])
        if self.input_shape[1:] != list(self.dataset.x_train.shape[1:]):
            raise BadDataError(f"images become {list(self.dataset.x_train.shape[1:])} after preprocessing but the "
                               f"model takes {self.input_shape[1:]}")
        self.output_names = [output.name for output in teacher.graph.output]
        first_shape = self.prepared.shapes[self.output_names[0]]
        if metric_function is not None:
            if spec.metric_name() is not None:
                raise BadSpecError(f"the metric is the callable {getattr(metric_function, '__name__', 'given')}: "
                                   "write the constraint with 'accuracy'")
            self.metric: Metric = custom_metric(metric_function)
        else:
            name = (spec.metric_name() or _recorded_metric(teacher, self.dataset.labels)
                    or default_metric_name(self.dataset.labels, first_shape))
            self.metric = build_metric(name, teacher, first_shape)
        check_labels(self.metric, self.dataset.labels)
        self.finetune_loss = spec.finetune_loss or ("ce" if self.metric.labels == "class" else "kd")
        if self.finetune_loss == "ce" and self.dataset.labels != "class":
            raise BadSpecError(f"finetune_loss 'ce' needs class-index labels but the data has "
                               f"{self.dataset.labels or 'no'} labels: use --finetune-loss kd")
        data_id = data if not Path(data).exists() else fingerprint(Path(data).resolve().as_posix(),
                                                                     Path(data).stat().st_mtime)
        identity = {"model": fingerprint(teacher.SerializeToString()), "data": data_id, "spec": spec.to_dict(),
                    "metric": self.metric.name}
        self.rundir = RunDir(run_dir or default_run_dir(model, spec.baseline), identity, fresh, lock=not worker)
        self.units = self.prepared.units(spec.granularity).units
        self.unit_names = [unit.name for unit in self.units]
        self.teacher_taps = None  # built by the first pre-training pass, reused by the later ones
        if not self.units:
            raise BadSpecError(f"{model} has no prunable units (every channel group is kept; see `onnxwootz analyze`)")

    # -- set-up: subspace, blocks, ordering ---------------------------------------------------------
    def _configs(self) -> list[list[float]]:
        from onnxwootz.configs import load_configs
        from onnxwootz.sampling import PROFILE_MAX_DROP, sample_configurations, sample_profile_configurations

        stored = self.rundir.path / "configs.json"
        if stored.exists():
            return load_configs(stored, len(self.units))
        def size_of(rates: list[float]) -> float:
            return self.costs.estimate(rates)[0]

        if self.spec.configs:
            configs = load_configs(self.spec.configs, len(self.units))
        elif self.spec.subspace == "profile":
            profile = self._sensitivity()
            configs = sample_profile_configurations(self.spec.candidates, profile.drops(), self.spec.rates, size_of,
                                                    self.spec.seed, max_drop=PROFILE_MAX_DROP * profile.teacher)
        else:
            configs = sample_configurations(self.spec.candidates, len(self.units), self.spec.rates, size_of,
                                            self.spec.seed)
        self.rundir.write_json("configs.json", configs)
        return configs

    def _sensitivity(self):
        """Each unit's drop in the run's metric when it alone is L1-pruned, on the validation split
        (once per run: the measurement is journaled, and counted in the run's time)."""
        from onnxwootz.sensitivity import measure_sensitivity

        labels = self.dataset.y_val if self.metric.labels else None
        measured = measure_sensitivity(self.prepared, self.dataset.x_val, labels, self.spec.rates,
                                       self.spec.granularity, self.spec.round_to, metric=self.metric)
        self.rundir.write_json("sensitivity.json", measured.to_dict())
        self.rundir.record({"event": "sensitivity", "seconds": measured.seconds})
        return measured

    def _order(self, configs: list[list[float]]) -> list[int]:
        key = self.spec.objective_key()
        if key == "latency":
            values = [self._latency(i, rates) for i, rates in enumerate(configs)]
        else:
            values = [self.costs.estimate(rates)[0 if key == "size" else 1] for rates in configs]
        return sorted(range(len(configs)), key=lambda i: (values[i], i))

    def _latency(self, index: int, rates: list[float]) -> float:
        """Measured once per candidate before any training, cached in the journal."""
        from onnxwootz.pruning import prune_prepared
        from onnxwootz.runtime.bench import bench

        event = self.rundir.find("latency", candidate=index)
        if event is None:
            started = time.perf_counter()
            pruned = prune_prepared(self.prepared, dict(zip(self.unit_names, rates)), self.spec.granularity,
                                self.spec.round_to)
            result = bench([pruned.model], provider=self.spec.provider, batches=(1,), warmup=3, runs=20)
            event = {"event": "latency", "candidate": index, "p50_ms": result.entries[0].p50_ms,
                     "seconds": time.perf_counter() - started}
            self.rundir.record(event)
        return float(event["p50_ms"])

    # -- blocks -------------------------------------------------------------------------------------
    def _block_file(self, block_index: int) -> str:
        from onnxwootz.journal import fingerprint

        block = self.blockset.blocks[block_index]
        return f"blocks/{fingerprint(block.start, list(block.rates))}.safetensors"

    def _train_blocks(self, indices: Sequence[int], seed: int) -> None:
        import torch

        from onnxwootz.pruning import prune_prepared
        from onnxwootz.passes.block_slice import slice_span
        from onnxwootz.runtime.reconstruction import reconstruct_span
        from onnxwootz.runtime.torch_graph import TorchGraph
        from onnxwootz.runtime.training import Student, TeacherTaps, pretrain_blocks

        todo = [b for b in indices if self.rundir.find("block", file=self._block_file(b)) is None]
        if not todo:
            return
        started = time.perf_counter()
        students, pruned_of = [], {}
        for b in todo:
            block = self.blockset.blocks[b]
            span = self.units[block.start:block.start + len(block.rates)]
            config = {name: 0.0 for name in self.unit_names}
            config.update({unit.name: rate for unit, rate in zip(span, block.rates)})
            pruned = prune_prepared(self.prepared, config, self.spec.granularity, self.spec.round_to)
            entry, exit_ = span[0].entry, span[-1].exit
            keep = pruned.kept_channels(self.prepared, exit_)
            shapes = dict(self.prepared.shapes)
            full = self.prepared.shapes[exit_][1]
            if keep is not None and len(keep) < full:
                shapes[exit_] = [shapes[exit_][0], len(keep), *shapes[exit_][2:]]
            else:
                keep = None
            span = slice_span(pruned.model, entry, exit_, shapes)
            if self.spec.pretrain_init == "lsq":
                reconstruct_span(self.prepared.model, span, entry, pruned.canonical_slices,
                                 self.dataset.x_inputs[:RECONSTRUCTION_IMAGES], threads=torch.get_num_threads())
            view = TorchGraph(span)
            students.append(Student(self._block_file(b), view, entry, exit_, keep))
            pruned_of[self._block_file(b)] = pruned
        if self.teacher_taps is None:
            boundaries = [name for unit in self.units for name in (unit.entry, unit.exit)]
            self.teacher_taps = TeacherTaps(self.prepared.model, boundaries, self.x_inputs, self.device)
        fits = pretrain_blocks(self.teacher_taps, students, self.spec.pretrain_config(), self.device, self.progress)
        seconds = (time.perf_counter() - started) / len(students)
        for student, b in zip(students, todo):
            trained = {init.name: onnx.numpy_helper.to_array(init) for init in student.view.to_onnx().graph.initializer
                       if init.name in student.view.param_names}
            pruned = pruned_of[student.key]
            arrays = {name: _scatter(self.teacher_arrays[name], value, pruned.canonical_slices.get(name, []))
                      for name, value in trained.items()}
            self.rundir.save_arrays(student.key, arrays)
            fit = fits[student.key]
            self.rundir.record({"event": "block", "file": student.key, "block": b,
                                "symbols": self.blockset.blocks[b].symbols, "loss": fit.loss,
                                "start_loss": fit.start_loss, "kept_start": fit.kept_start, "seconds": seconds})

    # -- candidates ---------------------------------------------------------------------------------
    def ensure_blocks(self, index: int) -> None:
        """Lazy pre-training: the blocks candidate `index` needs, trained when first reached.
        Block weights depend only on the block and the seed (every pass draws the same batches
        and students are independent), so the grouping of a pass never changes a result."""
        if self.mode == "method" and self.spec.pretrain == "lazy":
            self._train_blocks(self.blockset.composites[index].blocks, seed=self.spec.seed)

    def _assemble(self, index: int, rates: list[float]):
        from onnxwootz.passes.graph_index import replace_initializer
        from onnxwootz.pruning import prune_prepared

        pruned = prune_prepared(self.prepared, dict(zip(self.unit_names, rates)), self.spec.granularity,
                                self.spec.round_to)
        used = list(self.blockset.composites[index].blocks) if self.mode == "method" else []
        for b in used:
            for name, full in self.rundir.load_arrays(self._block_file(b)).items():
                replace_initializer(pruned.model, name, _take(full, pruned.canonical_slices.get(name, [])))
        return pruned, used

    def trial(self, index: int, rates: list[float]) -> tuple[dict[str, Any], onnx.ModelProto | None]:
        """Assemble, evaluate, fine-tune if needed. Returns the journal event (not recorded: the
        driver keeps the journal) and, when the candidate meets the bound, the checked answer."""
        from onnxwootz.runtime.devices import prepare_module
        from onnxwootz.runtime.torch_graph import TorchGraph
        from onnxwootz.runtime.training import finetune_with

        started = time.perf_counter()
        pruned, used = self._assemble(index, rates)
        view = prepare_module(TorchGraph(pruned.model, self.prepared.feed_shapes), self.device)
        outcome = finetune_with(view, self.x_pool, self.loss, self.score, self.bound, self.spec.finetune_config(index),
                                self.progress, f"candidate {index} ({self.mode})")
        latency = self.rundir.find("latency", candidate=index)
        event = {"event": "trial", "mode": self.mode, "candidate": index, "rates": rates, "params": pruned.params,
                 "macs": pruned.macs, "latency_ms": latency["p50_ms"] if latency else None,
                 "accuracy_at_assembly": outcome.curve[0][1], "accuracy": outcome.accuracy, "met": outcome.met,
                 "steps": outcome.steps, "blocks": used, "curve": [list(point) for point in outcome.curve]}
        answer = None
        if outcome.met:
            answer = self._finish_answer(view, pruned.model if outcome.steps == 0 else view.to_onnx(), outcome.accuracy)
        event["seconds"] = time.perf_counter() - started
        return event, answer

    def score(self, view) -> float:
        """The run's metric of a view on the validation split."""
        from onnxwootz.runtime.training import predict_outputs

        return self.metric(predict_outputs(view, self.x_val), self.teacher_val, self.dataset.y_val)

    def _finish_answer(self, view, model: onnx.ModelProto, value: float) -> onnx.ModelProto:
        """Export options, metadata (preprocessing, dataset, metric), the full checker, and ONNX
        Runtime == torch on real images for the model as written: a failed check raises, so
        nothing is written."""
        from onnxwootz.passes.base import check_model
        from onnxwootz.passes.export import export_options
        from onnxwootz.preprocess import ACCURACY_KEY, DATASET_KEY, set_metadata
        from onnxwootz.runtime.sessions import cpu_session
        from onnxwootz.runtime.training import predict_outputs

        if self.spec.fold_bn or self.spec.opset:
            model = export_options(model, self.spec.fold_bn, self.spec.opset)
        self.preprocess.write_to(model)
        set_metadata(model, DATASET_KEY, self.data_name)
        set_metadata(model, METRIC_KEY, self.metric.name)
        set_metadata(model, METRIC_VALUE_KEY, f"{value:.6f}")
        if self.metric.name == "top1":
            set_metadata(model, ACCURACY_KEY, f"{value:.6f}")
        check_model(model)
        sample = self.dataset.x_val[:16]
        ort_outputs = cpu_session(model).run(None, {model.graph.input[0].name: sample})
        torch_outputs = predict_outputs(view.eval(), self.x_val[:16])
        for name, ort, reference in zip(self.output_names, ort_outputs, torch_outputs):
            if ort.shape != reference.shape or not np.allclose(ort, reference, rtol=1e-3, atol=1e-4):
                raise RuntimeError(f"the answer disagrees with its torch view on output '{name}' "
                                   "(ONNX Runtime vs torch): not written")
        return model

    # -- the run ------------------------------------------------------------------------------------
    def setup(self, output: str | os.PathLike[str] | None = None) -> None:
        """Everything before exploration; deterministic, so a worker rebuilds the same state."""
        import torch

        from onnxwootz.costs import CostModel
        from onnxwootz.runtime.devices import prepare_input, prepare_module, resolve_device
        from onnxwootz.runtime.torch_graph import TorchGraph
        from onnxwootz.runtime.training import (TeacherTaps, distillation_of, labels_loss, output_kinds,
                                                predict_outputs)
        from onnxwootz.tuning_blocks import identify_blocks

        spec, dataset = self.spec, self.dataset
        self.device = resolve_device(spec.device)
        threads = spec.threads or (1 if self.prepared.macs < 50_000_000 else torch.get_num_threads())
        torch.set_num_threads(threads)
        torch.manual_seed(spec.seed)

        def on_device(x: np.ndarray) -> torch.Tensor:
            return prepare_input(torch.from_numpy(np.ascontiguousarray(x)), self.device)

        self.x_val, self.x_test = on_device(dataset.x_val), on_device(dataset.x_test)
        self.x_inputs = on_device(dataset.x_inputs)
        self.costs = CostModel(self.prepared, spec.granularity, spec.round_to)
        stem = self.model_path.name.removesuffix(".onnx")
        self.answer_path = Path(output) if output else self.rundir.path / f"{stem}.pruned.onnx"
        self.teacher_arrays = {i.name: onnx.numpy_helper.to_array(i) for i in self.prepared.model.graph.initializer}
        started = time.perf_counter()
        teacher = prepare_module(TorchGraph(self.prepared.model, self.prepared.feed_shapes), self.device)
        self.teacher_val = predict_outputs(teacher, self.x_val)
        self.teacher_test = predict_outputs(teacher, self.x_test)
        self.teacher_accuracy = self.metric(self.teacher_val, self.teacher_val, dataset.y_val)
        self.teacher_test_metric = self.metric(self.teacher_test, self.teacher_test, dataset.y_test)
        if self.rundir.find("teacher") is None:
            self.rundir.record({"event": "teacher", "model": str(self.model_path), "metric": self.metric.name,
                                "accuracy": self.teacher_accuracy, "test_metric": self.teacher_test_metric,
                                "seconds": time.perf_counter() - started})
        if self.finetune_loss == "kd":
            taps = TeacherTaps(self.prepared.model, self.output_names, self.x_inputs, self.device, autocast=False)
            kinds = output_kinds(self.prepared.model, self.prepared.shapes)
            self.x_pool, self.loss = self.x_inputs, distillation_of(taps, self.output_names, kinds, spec.batch)
        else:
            self.x_pool = on_device(dataset.x_train)
            self.loss = labels_loss(torch.from_numpy(dataset.y_train).long().to(self.device))
        self.bound = spec.parsed_constraint.bound(self.teacher_accuracy)
        self.configs = self._configs()
        self.blockset = identify_blocks(self.configs, None, spec.blocks) if self.mode == "method" else None

    def test_metric(self) -> float:
        """The written answer's metric on the held-out test split (after every decision is made)."""
        from onnxwootz.modelio import load_model
        from onnxwootz.runtime.devices import prepare_module
        from onnxwootz.runtime.torch_graph import TorchGraph
        from onnxwootz.runtime.training import predict_outputs

        view = prepare_module(TorchGraph(load_model(self.answer_path), self.prepared.feed_shapes), self.device)
        return self.metric(predict_outputs(view, self.x_test), self.teacher_test, self.dataset.y_test)

    def run(self, output: str | os.PathLike[str] | None, executor: "Executor", started: float) -> PruneResult:
        """The whole run; `started` (a perf_counter value) is when `prune` was called, so the
        wall clock includes loading the teacher and the data."""
        import torch

        threads = torch.get_num_threads()
        try:
            return self._run(output, executor, started)
        finally:
            torch.set_num_threads(threads)
            self.rundir.close()

    def _run(self, output: str | os.PathLike[str] | None, executor: "Executor", started: float) -> PruneResult:
        spec = self.spec
        self.setup(output)
        order = self._order(self.configs)
        if self.mode == "method":
            self.rundir.write_json("blocks.json", {"blocks": [dataclasses.asdict(b) for b in self.blockset.blocks],
                                                   "networks": [dataclasses.asdict(c) for c in self.blockset.composites]})
            if spec.pretrain == "eager":
                self._train_blocks(range(len(self.blockset.blocks)), seed=spec.seed)
        answer = executor.explore(self, order)
        trials = [Trial(**{k: v for k, v in e.items() if k != "event"}) for e in self.rundir.all("trial")
                  if e["mode"] == self.mode]
        blocks_trained = self.rundir.all("block")
        result = PruneResult(
            teacher=str(self.model_path), model=str(self.answer_path) if answer else None,
            run_dir=str(self.rundir.path), mode=self.mode, objective=spec.objective, constraint=spec.constraint,
            teacher_accuracy=self.teacher_accuracy, bound=self.bound, accuracy=answer["accuracy"] if answer else None,
            max_accuracy_drop=self.teacher_accuracy - self.bound, params=answer["params"] if answer else None,
            macs=answer["macs"] if answer else None, teacher_params=self.prepared.params,
            teacher_macs=self.prepared.macs, candidates=len(self.configs), candidates_tried=len(trials),
            blocks=len(self.blockset.blocks) if self.blockset else 0, blocks_trained=len(blocks_trained),
            pretrain_seconds=sum(float(e["seconds"]) for e in blocks_trained),
            wall_seconds=time.perf_counter() - started, trials=trials, metric=self.metric.name,
            teacher_test_metric=self.teacher_test_metric, test_metric=self.test_metric() if answer else None,
            splits=self.dataset.splits, preprocess=self.preprocess.to_dict(), input_shape=self.input_shape)
        self.rundir.write_json("summary.json", result.to_dict())
        return result


def _absolute_paths(spec: Spec) -> Spec:
    """A `preprocess` .json path made absolute, so that the spec means the same file from any
    working directory (Ray workers, resumed runs)."""
    value = spec.preprocess
    if value is not None and value.strip().lower().endswith(".json") and Path(value.strip()).is_file():
        return dataclasses.replace(spec, preprocess=Path(value.strip()).resolve().as_posix())
    return spec


def _recorded_metric(model: onnx.ModelProto, labels: str | None) -> str | None:
    """The registry metric a pruned model was held to (its metadata), when the data suits it:
    pruning an answer again needs no --metric."""
    from onnxwootz.metrics import LABELS_OF, parse_metric_name
    from onnxwootz.preprocess import get_metadata

    try:
        name = parse_metric_name(get_metadata(model, METRIC_KEY) or "")
    except BadSpecError:
        return None
    return name if LABELS_OF[name.split("@")[0]] in (None, labels) else None


def _class_count(model: onnx.ModelProto) -> int | None:
    """The class count of a classifier's first output ([N, C] with C static), else None."""
    dims = static_dims(model.graph.output[0]) if model.graph.output else []
    return dims[1] if len(dims) == 2 and dims[1] is not None else None


def _check_fits(model: onnx.ModelProto, image_shape: list[int]) -> None:
    """One BadDataError when the preprocessed images cannot be the model's first input."""
    value = real_inputs(model)[0]
    dims = static_dims(value)
    if len(image_shape) + 1 != len(dims):
        raise BadDataError(f"images become {image_shape} after preprocessing but the model's input "
                           f"'{value.name}' has rank {len(dims)} (shape {[d or '?' for d in dims]})")
    for axis, (want, have) in enumerate(zip(dims[1:], image_shape), start=1):
        if want is not None and want != have:
            raise BadDataError(f"images become {image_shape} after preprocessing but the model's input "
                               f"'{value.name}' is {[d or '?' for d in dims]} (axis {axis})")


def _scatter(teacher: np.ndarray, student: np.ndarray, entries: list[dict]) -> np.ndarray:
    """Student values written into a copy of the teacher tensor at the kept positions."""
    full = teacher.copy()
    index = [np.arange(n) for n in teacher.shape]
    for entry in entries:
        index[entry["axis"]] = np.asarray(entry["keep"])
    full[np.ix_(*index)] = student
    return full


def _take(full: np.ndarray, entries: list[dict]) -> np.ndarray:
    for entry in entries:
        full = np.take(full, entry["keep"], axis=entry["axis"])
    return full
