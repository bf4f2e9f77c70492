"""Candidates as Ray tasks on a local cluster: the same answer as the local executor with the
same seed, and a worker killed mid-trial costs nothing: the trial is re-run, no finished trial
is lost or journaled twice."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import ray

import onnxwootz
from onnxwootz.executors import LocalExecutor, RayExecutor

TEACHER = Path(__file__).resolve().parents[1] / "models" / "digits_resnet.onnx"
OPTIONS = {"candidates": 6, "pretrain_steps": 50, "finetune_steps": 50, "constraint": "accuracy >= teacher - 0.01"}


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _trial_workers() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"ray::_run_trial" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _journal_trials(run_dir: Path) -> list[dict]:
    lines = (run_dir / "journal.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if '"trial"' in line]


def test_ray_gives_the_local_answer_and_survives_a_killed_worker(tmp_path: Path, cluster) -> None:
    local = onnxwootz.prune(TEACHER, run_dir=tmp_path / "local", executor=LocalExecutor(), **OPTIONS)
    assert local.model is not None and local.candidates_tried >= 2  # a real search, not the first candidate

    killed: list[int] = []

    def kill_one_worker_mid_trial() -> None:
        deadline = time.monotonic() + 120
        while not killed and time.monotonic() < deadline:
            pids = _trial_workers()
            if pids:
                time.sleep(0.5)  # let it get into the trial
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one_worker_mid_trial, daemon=True)
    killer.start()
    distributed = onnxwootz.prune(TEACHER, run_dir=tmp_path / "ray", executor=RayExecutor(max_in_flight=2), **OPTIONS)
    killer.join(timeout=1)
    assert killed, "no trial worker was seen to kill"
    assert distributed.model is not None
    assert (distributed.accuracy, distributed.params) == (local.accuracy, local.params)
    answer = next(t for t in distributed.trials if t.met and t.params == distributed.params)
    assert answer.candidate == next(t for t in local.trials if t.met).candidate
    candidates = [t["candidate"] for t in _journal_trials(tmp_path / "ray")]
    assert len(candidates) == len(set(candidates))  # nothing journaled twice
    by_candidate = {t.candidate: t.accuracy for t in local.trials}
    for trial in distributed.trials:  # the same seeds give the same trials
        if trial.candidate in by_candidate:
            assert trial.accuracy == by_candidate[trial.candidate]
