"""The run context: everything a `prune` run fixes before it explores, built once and read by
every part (block trainer, candidate evaluator, executors, summary): the prepared teacher and
its units and costs, the data on the device, the metric and the teacher's figures on it, the
fine-tuning loss and bound, the run directory. Building it is deterministic, so a Ray worker
builds the same context from the same paths and spec (reading the driver's run directory)."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from onnxwootz.core.errors import BadDataError, BadSpecError
from onnxwootz.metrics import Metric, MetricFunction, NoiseMargin
from onnxwootz.core.onnx_helpers import real_inputs, static_dims
from onnxwootz.core.progress import Progress
from onnxwootz.spec import Spec

if TYPE_CHECKING:
    import torch

    from onnxwootz.costs import CostModel
    from onnxwootz.data import Dataset
    from onnxwootz.journal import RunDir
    from onnxwootz.passes.units import Unit, UnitPlan
    from onnxwootz.prepared import PreparedModel
    from onnxwootz.preprocess import Preprocess
    from onnxwootz.runtime.training import Loss

CONFIRM_SEED_OFFSET = 2
"""The confirmation split and its resamples are drawn from the run's seed plus this (a source's
missing val and test splits take the seed and the seed plus one)."""
METRIC_KEY = "onnxwootz.metric"
METRIC_VALUE_KEY = "onnxwootz.metric_value"
"""Metadata of a written answer: the metric it was held to and its validation value."""


@dataclasses.dataclass(frozen=True)
class RunContext:
    """One run's fixed state. `mode` is "method" or "baseline"; `x_*` are the splits' images on
    `device`; `x_pool` and `loss` are what fine-tuning draws batches from and minimises (the
    training split and its labels, or the image pool and distillation of every teacher output);
    `teacher_val`/`teacher_test` are the teacher's outputs the metric compares with; `bound` is
    the constraint's floor on the validation metric, and `noise` the margin a candidate's value
    must clear it by; `confirmation` (None with `confirm_fraction = 0`) is the held-out part of
    the validation images a candidate that met the bound must meet it on too."""

    spec: Spec
    progress: Progress
    mode: str
    model_path: Path
    data_name: str
    data_path: str
    preprocess: "Preprocess"
    dataset: "Dataset"
    prepared: "PreparedModel"
    input_shape: list[int]
    output_names: list[str]
    metric: Metric
    rundir: "RunDir"
    units: list["Unit"]
    unit_names: list[str]
    costs: "CostModel"
    answer_path: Path
    teacher_arrays: dict[str, np.ndarray]
    device: "torch.device"
    x_val: "torch.Tensor"
    x_test: "torch.Tensor"
    x_inputs: "torch.Tensor"
    x_pool: "torch.Tensor"
    loss: "Loss"
    teacher_val: list[np.ndarray]
    teacher_test: list[np.ndarray]
    teacher_accuracy: float
    teacher_test_metric: float
    bound: float
    noise: NoiseMargin
    confirmation: "Confirmation | None"


@dataclasses.dataclass(frozen=True)
class Confirmation:
    """The confirmation split (spec `confirm_fraction`): the teacher's outputs and metric on it,
    its own bound (relative to the teacher's metric here when the constraint is relative) and
    noise margin. Only candidates that met the bound on the rest of the validation images are
    scored here, so the answer is not the one luckiest on these images."""

    x: "torch.Tensor"
    labels: np.ndarray | None
    teacher: list[np.ndarray]
    teacher_metric: float
    bound: float
    noise: NoiseMargin


def default_run_dir(model: str | os.PathLike[str], baseline: bool) -> Path:
    stem = Path(model).name.removesuffix(".onnx")
    return Path("runs") / (stem + ("-baseline" if baseline else ""))


def open_run(model: Path, data: str | None, spec: Spec, run_dir: str | os.PathLike[str] | None, fresh: bool,
             progress: Progress, metric_function: MetricFunction | None = None,
             output: str | os.PathLike[str] | None = None, worker: bool = False) -> RunContext:
    """Load and check the teacher, the data and the metric, open the run directory (`worker`: a
    Ray worker's read-only view of the driver's, no lock, no writes), then set torch up (threads,
    seed, device) and measure the teacher. Sets torch's thread count: the caller restores it.
    A failure after the run directory is open closes it again."""
    from onnxwootz.costs import CostModel
    from onnxwootz.data import load_dataset
    from onnxwootz.journal import RunDir, fingerprint
    from onnxwootz.prepared import load_source, prepare
    from onnxwootz.preprocess import dataset_of, resolve_preprocess

    spec = _absolute_paths(spec)
    model_path = model.resolve() if model.exists() else model
    source, _ = load_source(model)
    preprocess = resolve_preprocess(spec.preprocess, source, spec.input_shape)
    if preprocess is None:
        raise BadSpecError(f"{model} has no 'onnxwootz.preprocess' metadata: say how to feed it with --preprocess "
                           "(imagenet, unit, none, a JSON object or a .json file; see the README)")
    data = data or dataset_of(source)
    if data is None:
        raise BadSpecError(f"{model} does not name its dataset in its metadata: pass --data digits, "
                           "--data DIR (train/<class>/*.png, val/<class>/...) or --data FILE.npz")
    dataset = load_dataset(data, preprocess, num_classes=_class_count(source), seed=spec.seed)
    dataset = dataset.with_confirmation(spec.confirm_fraction, spec.seed + CONFIRM_SEED_OFFSET)
    _check_fits(source, list(dataset.x_train.shape[1:]))
    prepared = prepare(source, list(spec.input_shape or [1, *dataset.x_train.shape[1:]]))
    teacher = prepared.model
    input_shape = list(prepared.feed_shapes[next(iter(prepared.feed_shapes))])
    if input_shape[1:] != list(dataset.x_train.shape[1:]):
        raise BadDataError(f"images become {list(dataset.x_train.shape[1:])} after preprocessing but the "
                           f"model takes {input_shape[1:]}")
    output_names = [output.name for output in teacher.graph.output]
    metric = _choose_metric(spec, prepared, dataset, metric_function)
    finetune_loss = spec.loss(metric.labels == "class")
    if finetune_loss == "ce" and dataset.labels != "class":
        raise BadSpecError(f"finetune_loss 'ce' needs class-index labels but the data has "
                           f"{dataset.labels or 'no'} labels: use --finetune-loss kd")
    data_id = data if not Path(data).exists() else fingerprint(Path(data).resolve().as_posix(),
                                                                 Path(data).stat().st_mtime)
    plan = prepared.units(spec.granularity)
    units = plan.units
    if not units:
        raise BadSpecError(f"{model} has no prunable units (every channel group is kept; see `onnxwootz analyze`)")
    identity = {"model": fingerprint(teacher.SerializeToString()), "data": data_id, "spec": spec.to_dict(),
                "metric": metric.name, "units": _plan_fingerprint(plan)}
    rundir = RunDir(run_dir or default_run_dir(model, spec.baseline), identity, fresh, lock=not worker)
    try:
        device = _set_up_torch(spec, prepared)
        x_val, x_test, x_inputs = (_on_device(x, device) for x in (dataset.x_val, dataset.x_test, dataset.x_inputs))
        splits = {"val": x_val, "test": x_test}
        if dataset.x_confirm is not None:
            splits["confirm"] = _on_device(dataset.x_confirm, device)
        measured = _measure_teacher(prepared, metric, dataset, splits, device, rundir, model_path)
        (teacher_val, teacher_accuracy), (teacher_test, teacher_test_metric) = measured["val"], measured["test"]
        constraint = spec.parsed_constraint
        confirmation = None if "confirm" not in measured else Confirmation(
            splits["confirm"], dataset.y_confirm, *measured["confirm"], constraint.bound(measured["confirm"][1]),
            NoiseMargin(metric, measured["confirm"][0], dataset.y_confirm, spec.bound_margin, constraint.relative,
                        spec.seed + CONFIRM_SEED_OFFSET))
        x_pool, loss = _finetune_pool(finetune_loss, prepared, output_names, dataset, x_inputs, device, spec.batch)
        stem = model_path.name.removesuffix(".onnx")
        return RunContext(
            spec=spec, progress=progress, mode="baseline" if spec.baseline else "method", model_path=model_path,
            data_name=data, data_path=Path(data).resolve().as_posix() if Path(data).exists() else data,
            preprocess=preprocess, dataset=dataset, prepared=prepared, input_shape=input_shape,
            output_names=output_names, metric=metric, rundir=rundir, units=units,
            unit_names=[unit.name for unit in units], costs=CostModel(prepared, spec.granularity, spec.round_to),
            answer_path=Path(output) if output else rundir.path / f"{stem}.pruned.onnx",
            teacher_arrays={i.name: onnx.numpy_helper.to_array(i) for i in prepared.model.graph.initializer},
            device=device, x_val=x_val, x_test=x_test, x_inputs=x_inputs, x_pool=x_pool, loss=loss,
            teacher_val=teacher_val, teacher_test=teacher_test, teacher_accuracy=teacher_accuracy,
            teacher_test_metric=teacher_test_metric, bound=constraint.bound(teacher_accuracy),
            noise=NoiseMargin(metric, teacher_val, dataset.y_val, spec.bound_margin, constraint.relative, spec.seed),
            confirmation=confirmation)
    except BaseException:
        rundir.close()
        raise


def _plan_fingerprint(plan: "UnitPlan") -> str:
    """The units and the spans their blocks train on: block files are named by (first unit,
    rates), so a run directory written by a version that cut units or spans differently must
    not lend its blocks to this one (it is refused; --fresh starts over)."""
    from onnxwootz.journal import fingerprint

    spans = [plan.span(i, i + 1) for i in range(len(plan.units))]
    return fingerprint([[unit.name, [node.name for node in span.nodes], span.entries, span.exits]
                        for unit, span in zip(plan.units, spans)])


def _choose_metric(spec: Spec, prepared: "PreparedModel", dataset: "Dataset",
                   function: MetricFunction | None) -> Metric:
    """The callable given, else the spec's metric, else the one a pruned teacher was held to,
    else the default for the labels and the first output; checked against the data's labels."""
    from onnxwootz.metrics import build_metric, check_labels, custom_metric, default_metric_name

    teacher = prepared.model
    first_shape = prepared.shapes[teacher.graph.output[0].name]
    if function is not None:
        if spec.metric_name() is not None:
            raise BadSpecError(f"the metric is the callable {getattr(function, '__name__', 'given')}: "
                               "write the constraint with 'accuracy'")
        metric = custom_metric(function)
    else:
        name = (spec.metric_name() or _recorded_metric(teacher, dataset.labels)
                or default_metric_name(dataset.labels, first_shape))
        metric = build_metric(name, teacher, first_shape)
    check_labels(metric, dataset.labels)
    return metric


def _set_up_torch(spec: Spec, prepared: "PreparedModel") -> "torch.device":
    """The run's device; torch's threads (one for small models, whose steps threads only slow
    down) and seed."""
    import torch

    from onnxwootz.runtime.devices import resolve_device

    device = resolve_device(spec.device)
    torch.set_num_threads(spec.threads or (1 if prepared.macs < 50_000_000 else torch.get_num_threads()))
    torch.manual_seed(spec.seed)
    return device


def _on_device(x: np.ndarray, device: "torch.device") -> "torch.Tensor":
    import torch

    from onnxwootz.runtime.devices import prepare_input

    return prepare_input(torch.from_numpy(np.ascontiguousarray(x)), device)


def _measure_teacher(prepared: "PreparedModel", metric: Metric, dataset: "Dataset", splits: dict[str, "torch.Tensor"],
                     device: "torch.device", rundir: "RunDir",
                     model_path: Path) -> dict[str, tuple[list[np.ndarray], float]]:
    """The teacher's outputs on each split (val, test, confirm) and its metric there, journaled
    once per run."""
    from onnxwootz.runtime.devices import prepare_module
    from onnxwootz.runtime.torch_graph import TorchGraph
    from onnxwootz.runtime.training import predict_outputs

    started = time.perf_counter()
    teacher = prepare_module(TorchGraph(prepared.model, prepared.feed_shapes), device)
    measured = {}
    for split, x in splits.items():
        outputs = predict_outputs(teacher, x)
        measured[split] = (outputs, metric(outputs, outputs, getattr(dataset, f"y_{split}")))
    if rundir.find("teacher") is None:
        confirm = {"confirm_metric": measured["confirm"][1]} if "confirm" in measured else {}
        rundir.record({"event": "teacher", "model": str(model_path), "metric": metric.name,
                       "accuracy": measured["val"][1], "test_metric": measured["test"][1], **confirm,
                       "seconds": time.perf_counter() - started})
    return measured


def _finetune_pool(kind: str, prepared: "PreparedModel", output_names: list[str], dataset: "Dataset",
                   x_inputs: "torch.Tensor", device: "torch.device", batch: int) -> tuple["torch.Tensor", "Loss"]:
    """What fine-tuning draws batches from and minimises: "kd", the image pool and distillation
    of every teacher output; "ce", the training split and its class labels."""
    import torch

    from onnxwootz.runtime.training import TeacherTaps, distillation_of, labels_loss, output_kinds

    if kind == "kd":
        taps = TeacherTaps(prepared.model, output_names, x_inputs, device, autocast=False)
        return x_inputs, distillation_of(taps, output_names, output_kinds(prepared.model, prepared.shapes), batch)
    return _on_device(dataset.x_train, device), labels_loss(torch.from_numpy(dataset.y_train).long().to(device))


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
