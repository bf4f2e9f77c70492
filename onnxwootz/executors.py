"""Where candidates run. Both executors walk candidates in objective order and return the first
that meets the bound; the driver alone writes the journal, so a lost worker's trial is simply
run again and nothing finished is lost or repeated.

- LocalExecutor: one candidate after another in this process.
- RayExecutor: candidates are Ray tasks (CPU/GPU needs declared), a bounded number in flight.
  Once a candidate meets the bound no later one is started, running later ones are cancelled,
  and the answer is settled when every earlier candidate has finished, so it is the answer the
  local executor gives. Blocks are pre-trained by the driver before a candidate that needs them
  is dispatched; workers read block weights from the run directory (a shared filesystem)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable, Protocol

import onnx

from onnxwootz.candidates import CandidateEvaluator
from onnxwootz.context import RunContext, open_run
from onnxwootz.core.errors import BadSpecError
from onnxwootz.core.progress import NULL_PROGRESS
from onnxwootz.events import TrialEvent
from onnxwootz.spec import Spec


class Explorer(Protocol):
    """What an executor uses of onnxwootz.pipeline.Explorer. The pipeline imports the executors,
    so they see it only through this interface (and a Ray worker rebuilds one with its class)."""

    context: RunContext
    candidates: CandidateEvaluator

    def ensure_blocks(self, index: int) -> None: ...


class Executor(Protocol):
    def explore(self, explorer: "Explorer", order: list[int]) -> TrialEvent | None:
        """Run candidates in `order`; return the answer's trial (or None)."""
        ...


def _finished(explorer: "Explorer", index: int) -> TrialEvent | None:
    context = explorer.context
    event = context.rundir.find("trial", mode=context.mode, candidate=index)
    if event is None:
        return None
    trial = TrialEvent.from_event(event)
    if trial.met and not context.answer_path.exists():
        return None  # met, but the answer file was lost: run it again to rebuild the model
    return trial


def _save_answer(explorer: "Explorer", answer: onnx.ModelProto) -> None:
    from onnxwootz.core.modelio import save_model

    save_model(answer, explorer.context.answer_path)


class LocalExecutor:
    def explore(self, explorer: "Explorer", order: list[int]) -> TrialEvent | None:
        context = explorer.context
        with context.progress.task(f"exploring candidates ({context.mode})", total=len(order)) as task:
            for index in order:
                trial = _finished(explorer, index)
                if trial is None:
                    explorer.ensure_blocks(index)
                    trial, answer = explorer.candidates.trial(index)
                    if answer is not None:
                        _save_answer(explorer, answer)
                    context.rundir.record(trial.to_event())
                task.advance(1, accuracy=trial.accuracy)
                if trial.met:
                    return trial
        return None


@dataclasses.dataclass
class _Payload:
    """What a worker needs to rebuild the run's state (paths, so the run dir must be shared)."""

    model: str
    data: str | None
    spec: dict[str, Any]
    run_dir: str


_WORKER_STATE: dict[str, "Explorer"] = {}


def _run_trial(build: Callable[[RunContext], "Explorer"], payload: _Payload,
               index: int) -> tuple[dict[str, Any], bytes | None]:
    """A Ray task: one candidate's trial in a worker (state cached per worker process). `build`
    is the driver's explorer class (Ray sends it by reference: the worker imports its module);
    the trial travels back in its journal form (TrialEvent.to_event), the answer as ONNX bytes."""
    key = json.dumps(dataclasses.asdict(payload), sort_keys=True)
    explorer = _WORKER_STATE.get(key)
    if explorer is None:
        explorer = build(open_run(Path(payload.model), payload.data, Spec(**payload.spec), payload.run_dir, False,
                                  NULL_PROGRESS, worker=True))
        _WORKER_STATE[key] = explorer
    trial, answer = explorer.candidates.trial(index)
    return trial.to_event(), answer.SerializeToString() if answer is not None else None


class RayExecutor:
    def __init__(self, address: str | None = None, max_in_flight: int | None = None, num_cpus: float = 1,
                 num_gpus: float = 0, max_retries: int = 3):
        self.address = address
        self.max_in_flight = max_in_flight
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.max_retries = max_retries

    def _connect(self):
        try:
            import ray
        except ImportError:
            raise BadSpecError("--executor ray needs Ray: pip install 'onnxwootz[ray]'") from None
        if not ray.is_initialized():
            options = {"include_dashboard": False, "log_to_driver": False, "ignore_reinit_error": True}
            if self.address:
                ray.init(address=self.address, **options)
            else:
                ray.init(num_cpus=max(1, os.cpu_count() or 1), **options)
        return ray

    def explore(self, explorer: "Explorer", order: list[int]) -> TrialEvent | None:
        context = explorer.context
        if context.metric.labels == "any":
            raise BadSpecError("a metric given as a Python callable cannot travel to Ray workers: use a named "
                               "metric (--metric) or the local executor")
        ray = self._connect()
        limit = self.max_in_flight or max(1, int(ray.cluster_resources().get("CPU", 1) // self.num_cpus))
        task = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=self.max_retries,
                          retry_exceptions=False)(_run_trial)
        payload = _Payload(str(context.model_path.resolve()), context.data_path,
                           context.spec.to_dict(), str(context.rundir.path.resolve()))
        results: dict[int, TrialEvent] = {}
        answers: dict[int, bytes] = {}
        pending: dict[Any, int] = {}
        position, best = 0, None
        with context.progress.task(f"exploring candidates ({context.mode}, ray)", total=len(order)) as bar:
            while True:
                while len(pending) < limit and position < len(order) and (best is None or position < best):
                    index = order[position]
                    trial = _finished(explorer, index)
                    if trial is not None:
                        results[position] = trial
                        bar.advance(1, accuracy=trial.accuracy)
                        if trial.met:
                            best = position if best is None else min(best, position)
                    else:
                        explorer.ensure_blocks(index)
                        pending[task.remote(type(explorer), payload, index)] = position
                    position += 1
                if best is not None and all(p in results for p in range(best + 1)):
                    break
                if not pending:
                    break
                done, _ = ray.wait(list(pending), num_returns=1)
                slot = pending.pop(done[0])
                event, answer = ray.get(done[0])
                context.rundir.record(event)
                trial = TrialEvent.from_event(event)
                results[slot] = trial
                bar.advance(1, accuracy=trial.accuracy)
                if trial.met:
                    answers[slot] = answer
                    best = slot if best is None else min(best, slot)
                    for ref, other in list(pending.items()):
                        if other > best:  # cannot win any more
                            ray.cancel(ref, force=True)
                            del pending[ref]
        for ref in pending:
            ray.cancel(ref, force=True)
        if best is None:
            return None
        if best in answers:
            _save_answer(explorer, onnx.load_from_string(answers[best]))
        return results[best]
