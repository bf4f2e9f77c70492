"""Latency of ONNX models under ONNX Runtime, measured so that models can be compared: pinned
threads, untimed warm-up, single timed runs that alternate between the models (drift on a
shared machine hits all of them alike), and ratios against the first model."""

from __future__ import annotations

import dataclasses
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx

from onnxwootz.core.errors import BadSpecError, first_line
from onnxwootz.core.modelio import load_model
from onnxwootz.core.onnx_helpers import dummy_feed, input_shapes, real_inputs
from onnxwootz.core.progress import NULL_PROGRESS, Progress
from onnxwootz.core.results import Result
from onnxwootz.runtime.sessions import PROVIDERS, pinned_session


@dataclasses.dataclass
class BenchEntry:
    """Timings of one model at one batch size (milliseconds; throughput in images/s at p50)."""

    model: str
    batch: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    throughput: float
    providers: list[str]


@dataclasses.dataclass
class SkippedEntry:
    """A model and batch size that was not measured, and why."""

    model: str
    batch: int
    reason: str


@dataclasses.dataclass
class BenchRatio:
    """A model against the first model at one batch: p50 over p50, and the median of the
    per-run ratios of the alternating pairs (the figure least moved by drift)."""

    model: str
    batch: int
    p50_ratio: float
    paired_ratio: float


@dataclasses.dataclass
class BenchResult(Result):
    provider: str
    threads: int
    warmup: int
    runs: int
    device: str
    onnxruntime_version: str
    session_options: dict[str, Any]
    models: list[str]
    entries: list[BenchEntry]
    skipped: list[SkippedEntry]
    ratios: list[BenchRatio]


class _Runner:
    """One model's session at one batch size, with its inputs made (and on CUDA bound to the
    device) once, so a timed run is the model's work and nothing else."""

    def __init__(self, label: str, session: Any, feed: dict[str, np.ndarray], provider: str):
        self.label = label
        self.session = session
        self.feed = feed
        self.binding = None
        if provider != "cpu":
            import onnxruntime as ort

            self.binding = session.io_binding()
            self.device_inputs = {name: ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0) for name, array in feed.items()}
            for name, value in self.device_inputs.items():
                self.binding.bind_ortvalue_input(name, value)
            for output in session.get_outputs():
                self.binding.bind_output(output.name, "cuda", 0)
            self.binding.synchronize_inputs()

    def run_once(self) -> None:
        if self.binding is None:
            self.session.run(None, self.feed)
        else:
            self.session.run_with_iobinding(self.binding)


def bench(
    models: Sequence[str | Path | onnx.ModelProto],
    provider: str = "cpu",
    batches: Sequence[int] = (1,),
    threads: int = 1,
    warmup: int = 10,
    runs: int = 50,
    input_shape: Sequence[int] | None = None,
    progress: Progress = NULL_PROGRESS,
    cache_dir: Path | None = None,
) -> BenchResult:
    """Time every model at every batch size. Dim 0 of `input_shape` (which fixes dynamic dims
    of the first input) is replaced by each batch size. A model whose inputs have a fixed batch
    is measured only at that batch; other sizes are listed as skipped with the reason."""
    import onnxruntime as ort

    _check_arguments(models, provider, batches, warmup, runs)
    labels = _labels(models)
    protos = [load_model(m, canonical_opset=False) if not isinstance(m, onnx.ModelProto) else m for m in models]
    sessions = []
    options: dict[str, Any] = {}
    for source, proto in zip(models, protos):
        payload = proto if isinstance(source, onnx.ModelProto) else str(source)
        session, options = pinned_session(payload, provider, threads, cache_dir)
        sessions.append(session)

    entries: list[BenchEntry] = []
    skipped: list[SkippedEntry] = []
    ratios: list[BenchRatio] = []
    plan = []
    for batch in batches:
        runners = []
        for label, proto, session in zip(labels, protos, sessions):
            reason = _fixed_batch_reason(proto, batch)
            if reason:
                skipped.append(SkippedEntry(label, batch, reason))
            else:
                feed = dummy_feed(proto, _batch_shapes(proto, batch, input_shape))
                runners.append(_Runner(label, session, feed, provider))
        plan.append((batch, runners))

    total = sum(len(runners) for _, runners in plan) * (warmup + runs)
    with progress.task(f"bench on {provider}", total=total) as task:
        for batch, runners in plan:
            times = _measure(runners, batch, warmup, runs, task)
            entries.extend(_entry(runner, batch, row) for runner, row in zip(runners, times))
            if runners and runners[0].label == labels[0]:
                ratios.extend(BenchRatio(runner.label, batch, float(np.median(row) / np.median(times[0])),
                                         float(np.median(row / times[0])))
                              for runner, row in zip(runners, times))

    return BenchResult(
        provider=provider, threads=threads, warmup=warmup, runs=runs, device=_device(provider),
        onnxruntime_version=ort.__version__, session_options=options, models=labels,
        entries=entries, skipped=skipped, ratios=ratios,
    )


def _check_arguments(models: Sequence[Any], provider: str, batches: Sequence[int], warmup: int, runs: int) -> None:
    if not models:
        raise BadSpecError("bench needs at least one model")
    if provider not in PROVIDERS:
        raise BadSpecError(f"unknown provider '{provider}'; choose one of {', '.join(PROVIDERS)}")
    if not batches or any(b < 1 for b in batches):
        raise BadSpecError(f"batch sizes must be positive integers, got {list(batches)}")
    if len(set(batches)) != len(batches):
        raise BadSpecError(f"batch sizes repeat: {list(batches)}")
    if warmup < 1:
        raise BadSpecError(f"warmup must be at least 1 (the first run checks the inputs fit), got {warmup}")
    if runs < 1:
        raise BadSpecError(f"runs must be at least 1, got {runs}")


def _labels(models: Sequence[str | Path | onnx.ModelProto]) -> list[str]:
    """Names for the table and JSON: the path as given, or the graph name; repeats get '#k'."""
    labels: list[str] = []
    for index, model in enumerate(models):
        base = (model.graph.name or f"model{index}") if isinstance(model, onnx.ModelProto) else str(model)
        label, count = base, 1
        while label in labels:
            count += 1
            label = f"{base}#{count}"
        labels.append(label)
    return labels


def _fixed_batch_reason(model: onnx.ModelProto, batch: int) -> str | None:
    for value in real_inputs(model):
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 and dims[0].dim_value != batch:
            return f"input '{value.name}' has a fixed batch of {dims[0].dim_value}"
    return None


def _batch_shapes(model: onnx.ModelProto, batch: int, input_shape: Sequence[int] | None) -> dict[str, list[int]]:
    """Concrete input shapes with dim 0 set to `batch` (inputs of a fixed batch already have it)."""
    shapes = input_shapes(model, input_shape)
    for value in real_inputs(model):
        if shapes[value.name]:
            shapes[value.name][0] = batch
    return shapes


def _measure(runners: list[_Runner], batch: int, warmup: int, runs: int, task: Any) -> np.ndarray:
    """Warm-up rounds, then timed rounds; each round runs every model once, in turn, so the
    models share whatever the machine does meanwhile, and the turn order rotates from round to
    round so that no model always runs right after the same one (a measured position bias).
    Returns milliseconds, one row per model."""
    for runner in runners:
        _first_run(runner, batch)
        task.advance(1)
    for _ in range(warmup - 1):
        for runner in runners:
            runner.run_once()
            task.advance(1)
    times = np.zeros((len(runners), runs))
    for index in range(runs):
        for offset in range(len(runners)):
            slot = (index + offset) % len(runners)
            runner = runners[slot]
            start = time.perf_counter_ns()
            runner.run_once()
            times[slot, index] = (time.perf_counter_ns() - start) / 1e6
            task.advance(1, batch=batch)
    return times


def _first_run(runner: _Runner, batch: int) -> None:
    """The first warm-up run, where a shape that does not fit the model shows up: one clear line."""
    try:
        runner.run_once()
    except Exception as exc:
        raise BadSpecError(f"{runner.label} cannot run at batch {batch}: {first_line(exc)}") from None


def _entry(runner: _Runner, batch: int, times_ms: np.ndarray) -> BenchEntry:
    p50, p90, p99 = np.percentile(times_ms, [50, 90, 99])
    return BenchEntry(
        model=runner.label, batch=batch, runs=len(times_ms),
        p50_ms=float(p50), p90_ms=float(p90), p99_ms=float(p99),
        mean_ms=float(times_ms.mean()), std_ms=float(times_ms.std()),
        throughput=float(batch * 1000.0 / p50),
        providers=list(runner.session.get_providers()),
    )


def _device(provider: str) -> str:
    """The GPU's name for GPU providers (nvidia-smi), else the CPU's model name."""
    if provider != "cpu":
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout
            if out.strip():
                return out.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError):
            pass
        return "unknown GPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
