"""The run directory cannot be corrupted: a torn last line is cut before the next append (which
it would otherwise swallow), a second process is refused with one line naming the holder and
gets the directory once the holder is SIGKILLed, `fresh` removes the tool's files and nothing
else, a derived file not listed under the run's identity is never reused, a re-run candidate
has one trial, and an append that fails (full disk) leaves the journal as it was."""

from __future__ import annotations

import errno
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import onnxwootz.journal as journal
from onnxwootz.core.errors import BadSpecError, RunDirBusyError
from onnxwootz.journal import RunDir, read_events

IDENTITY = {"model": "0123456789abcdef", "data": "digits", "spec": {"candidates": 4, "seed": 0}}
TEACHER = Path(__file__).resolve().parents[1] / "models" / "digits_resnet.onnx"
CLI = shutil.which("onnxwootz")
HOLDER = """
import sys, time
from onnxwootz.journal import RunDir
run = RunDir(sys.argv[1], {"model": "held"})
run.record({"event": "teacher", "accuracy": 0.5})
print("held", flush=True)
time.sleep(120)
"""


def open_elsewhere(path: Path, identity: dict) -> subprocess.CompletedProcess:
    """Open the run directory in another process; its stderr says why when it cannot."""
    code = "import json, sys; from onnxwootz.journal import RunDir; RunDir(sys.argv[1], json.loads(sys.argv[2]))"
    return subprocess.run([sys.executable, "-c", code, str(path), json.dumps(identity)], capture_output=True,
                          text=True)


def trial(candidate: int, accuracy: float, mode: str = "method", met: bool = False) -> dict:
    return {"event": "trial", "mode": mode, "candidate": candidate, "accuracy": accuracy, "met": met}


@pytest.fixture()
def holder(tmp_path: Path):
    """Another process holding tmp_path/run; SIGKILLed at the end if still alive."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "run")], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline().strip() == "held"
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def test_a_torn_last_line_is_cut_and_does_not_swallow_the_next_event(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run", IDENTITY)
    run.record(trial(0, 0.5))
    run.record(trial(1, 0.6))
    run.close()
    with open(run.journal_path, "ab") as handle:  # a crash in the middle of the third append
        handle.write(b'{"event": "trial", "mode": "method", "cand')
    reopened = RunDir(tmp_path / "run", IDENTITY)
    assert [e["candidate"] for e in reopened.events] == [0, 1]
    assert run.journal_path.read_bytes().endswith(b"}\n")  # cut on open
    with open(run.journal_path, "ab") as handle:  # torn again while open (cut before the append too)
        handle.write(b'{"event": "tri')
    reopened.record(trial(2, 0.7))
    assert [e["candidate"] for e in read_events(run.journal_path)] == [0, 1, 2]
    assert all(json.loads(line) for line in run.journal_path.read_text().splitlines())


def test_a_complete_line_without_its_newline_is_not_committed(tmp_path: Path) -> None:
    """The newline commits a line: the reader and the repair agree on what was finished."""
    path = tmp_path / "journal.jsonl"
    path.write_bytes(json.dumps(trial(0, 0.5)).encode() + b"\n" + json.dumps(trial(1, 0.6)).encode())
    assert [e["candidate"] for e in read_events(path)] == [0]


def test_a_second_process_is_refused_naming_the_holder_until_it_is_killed(tmp_path: Path, holder) -> None:
    with pytest.raises(RunDirBusyError) as refused:
        RunDir(tmp_path / "run", {"model": "held"})
    message = str(refused.value)
    assert f"pid {holder.pid} on {socket.gethostname()}" in message and "in use by another onnxwootz run" in message
    assert "\n" not in message
    with pytest.raises(RunDirBusyError):
        RunDir(tmp_path / "run", {"model": "held"}, fresh=True)  # refused before removing anything
    assert read_events(tmp_path / "run" / "journal.jsonl") == [{"event": "teacher", "accuracy": 0.5}]
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    taken = RunDir(tmp_path / "run", {"model": "held"})  # the OS dropped the lock with the process
    assert taken.events == [{"event": "teacher", "accuracy": 0.5}]
    taken.record(trial(0, 0.5))
    held = json.loads((tmp_path / "run" / "run.lock").read_text())
    assert held["pid"] == os.getpid() and held["host"] == socket.gethostname() and held["started"]


def test_a_second_prune_is_one_line_and_exit_4(tmp_path: Path, holder) -> None:
    result = subprocess.run([CLI, "prune", str(TEACHER), "--run-dir", str(tmp_path / "run")], capture_output=True,
                            text=True, env={**os.environ, "COLUMNS": "300"})
    assert result.returncode == RunDirBusyError.exit_code == 4, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"in use by another onnxwootz run (pid {holder.pid}" in lines[0], result.stderr
    assert read_events(tmp_path / "run" / "journal.jsonl") == [{"event": "teacher", "accuracy": 0.5}]


def test_a_reader_opens_without_the_lock_and_writes_nothing(tmp_path: Path, holder) -> None:
    """What a Ray worker needs: the driver's finished work, while the driver holds the lock."""
    reader = RunDir(tmp_path / "run", {"model": "held"}, lock=False)
    assert reader.find("teacher") == {"event": "teacher", "accuracy": 0.5}
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    with pytest.raises(RuntimeError, match="cannot be written"):
        reader.record(trial(0, 0.5))
    with pytest.raises(RuntimeError, match="cannot be written"):
        reader.write_json("configs.json", [])
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
    with pytest.raises(BadSpecError, match="different run"):
        RunDir(tmp_path / "run", IDENTITY, lock=False)


def test_the_lock_is_shared_in_one_process_and_free_once_every_rundir_is_gone(tmp_path: Path) -> None:
    first = RunDir(tmp_path / "run", IDENTITY)
    second = RunDir(tmp_path / "run", IDENTITY)  # e.g. a run retried in a notebook: not refused
    first.close()
    assert "RunDirBusyError" in open_elsewhere(tmp_path / "run", IDENTITY).stderr  # `second` still holds it
    del second
    gc.collect()
    assert open_elsewhere(tmp_path / "run", IDENTITY).returncode == 0


def test_a_failed_open_releases_the_lock(tmp_path: Path) -> None:
    RunDir(tmp_path / "run", IDENTITY).close()
    with pytest.raises(BadSpecError, match="different run"):
        RunDir(tmp_path / "run", {**IDENTITY, "spec": {"candidates": 3, "seed": 0}})
    assert open_elsewhere(tmp_path / "run", IDENTITY).returncode == 0  # not left locked by the refusal


def _populate(path: Path) -> RunDir:
    """A run as `prune` and `report` leave it, plus files of the user's own."""
    run = RunDir(path, IDENTITY)
    run.record(trial(0, 0.5, met=True))
    run.write_json("configs.json", [[0.5, 0.5]] * 4)
    run.write_json("sensitivity.json", {"units": []})  # the profile subspace's measurement
    run.write_json("blocks.json", {"blocks": []})
    run.save_arrays("blocks/0123.safetensors", {"w": np.ones((2, 2), np.float32)})
    run.write_json("summary.json", {"mode": "method"})
    for name in ("digits_resnet.pruned.onnx", "report/report.md", "report/report.html", "report/finetune_curves.png",
                 ".configs.json.abc123.tmp", "notes.txt", "report/mine.png", "blocks/README"):
        (path / name).parent.mkdir(exist_ok=True)
        (path / name).write_text(name)
    run.close()
    return run


def test_fresh_removes_every_file_the_tool_wrote_and_nothing_else(tmp_path: Path) -> None:
    _populate(tmp_path / "run")
    other = {**IDENTITY, "spec": {"candidates": 3, "seed": 1}}
    run = RunDir(tmp_path / "run", other, fresh=True)
    left = sorted(p.relative_to(tmp_path / "run").as_posix() for p in (tmp_path / "run").rglob("*") if p.is_file())
    assert left == ["blocks/README", "notes.txt", "report/mine.png", "run.json", "run.lock"]
    assert run.events == [] and run.find("trial") is None
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())
    assert recorded["identity"] == other and recorded["files"] == []


def test_a_folder_of_other_files_is_refused_and_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.jpg").write_text("a")
    (folder / "summary.json").write_text("mine")
    for fresh in (False, True):
        with pytest.raises(BadSpecError, match="not an onnxwootz run directory and holds other files \\(a.jpg\\)"):
            RunDir(folder, IDENTITY, fresh=fresh)
    assert sorted(p.name for p in folder.iterdir()) == ["a.jpg", "summary.json"]


def test_tool_files_without_run_json_are_not_reused(tmp_path: Path) -> None:
    path = tmp_path / "run"
    path.mkdir()
    (path / "configs.json").write_text("[[0.9]]")
    (path / "journal.jsonl").write_text(json.dumps(trial(0, 0.1)) + "\n")
    with pytest.raises(BadSpecError, match="no run.json"):
        RunDir(path, IDENTITY)
    run = RunDir(path, IDENTITY, fresh=True)
    assert run.events == [] and not (path / "configs.json").exists()


def test_a_derived_file_not_listed_under_the_identity_is_removed(tmp_path: Path) -> None:
    """E.g. configs.json kept by an older `--fresh`, or written just before a crash."""
    run = RunDir(tmp_path / "run", IDENTITY)
    run.write_json("configs.json", [[0.5]] * 4)
    run.close()
    (tmp_path / "run" / "blocks.json").write_text("{}")  # another identity's, not listed
    (tmp_path / "run" / "blocks").mkdir()
    (tmp_path / "run" / "blocks" / "stale.safetensors").write_bytes(b"x")
    RunDir(tmp_path / "run", IDENTITY).close()
    assert sorted(p.name for p in (tmp_path / "run").rglob("*") if p.is_file()) == [
        "configs.json", "run.json", "run.lock"]
    assert json.loads((tmp_path / "run" / "configs.json").read_text()) == [[0.5]] * 4


def test_a_run_json_without_a_file_list_adopts_its_files(tmp_path: Path) -> None:
    """Run directories written before run.json listed files keep their configurations."""
    path = tmp_path / "run"
    path.mkdir()
    (path / "run.json").write_text(json.dumps({"identity": IDENTITY}))
    (path / "configs.json").write_text("[[0.5]]")
    run = RunDir(path, IDENTITY)
    assert (path / "configs.json").read_text() == "[[0.5]]"
    recorded = json.loads((path / "run.json").read_text())
    assert recorded["files"] == ["configs.json"] and recorded["cwd"] == os.getcwd()
    assert recorded["fingerprint"] == journal.fingerprint(IDENTITY)
    run.close()


def test_a_rerun_candidate_has_one_trial_the_latest(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run", IDENTITY)
    run.record(trial(3, 0.91, met=True))
    run.record(trial(5, 0.80))
    run.record(trial(3, 0.80, mode="baseline"))
    run.record(trial(3, 0.93, met=True))  # re-run because its answer file was lost
    for view in (run, RunDir(tmp_path / "run", IDENTITY)):
        trials = view.all("trial")
        assert [(t["mode"], t["candidate"], t["accuracy"]) for t in trials] == [
            ("method", 3, 0.93), ("method", 5, 0.80), ("baseline", 3, 0.80)]
        assert view.find("trial", mode="method", candidate=3)["accuracy"] == 0.93
    assert len(run.events) == 4  # the journal keeps the history; readers see one trial per key


def _disk_full_after(monkeypatch: pytest.MonkeyPatch, written: int) -> None:
    """os.write in the journal writes `written` bytes, then fails with ENOSPC."""
    real = os.write
    calls = []

    def write(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) == 1 and written:
            return real(fd, bytes(data[:written]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal.os, "write", write)


@pytest.mark.parametrize("written", [0, 7])
def test_an_append_on_a_full_disk_leaves_the_journal_as_it_was(tmp_path: Path, monkeypatch, written: int) -> None:
    run = RunDir(tmp_path / "run", IDENTITY)
    run.record(trial(0, 0.5))
    before = run.journal_path.read_bytes()
    with monkeypatch.context() as patch:
        _disk_full_after(patch, written)
        with pytest.raises(OSError, match="No space left"):
            run.record(trial(1, 0.6))
    assert run.journal_path.read_bytes() == before and len(run.events) == 1
    run.record(trial(2, 0.7))  # space again: appends cleanly after the first line
    assert [e["candidate"] for e in read_events(run.journal_path)] == [0, 2]


def test_a_failed_fsync_is_undone_too(tmp_path: Path, monkeypatch) -> None:
    run = RunDir(tmp_path / "run", IDENTITY)
    run.record(trial(0, 0.5))
    before = run.journal_path.read_bytes()

    def fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(journal.os, "fsync", fsync)
    with pytest.raises(OSError):
        run.record(trial(1, 0.6))
    assert run.journal_path.read_bytes() == before


FAST = {"candidates": 3, "pretrain_steps": 5, "finetune_steps": 0, "batch": 32,
        "constraint": "accuracy >= teacher - 0.5"}


def _journal_trials(run: Path) -> list[dict]:
    return [e for e in read_events(run / "journal.jsonl") if e["event"] == "trial"]


def test_prune_counts_a_candidate_rerun_for_its_lost_answer_once(tmp_path: Path) -> None:
    import onnxwootz

    first = onnxwootz.prune(TEACHER, run_dir=tmp_path / "run", **FAST)
    assert first.model is not None
    Path(first.model).unlink()
    again = onnxwootz.prune(TEACHER, run_dir=tmp_path / "run", **FAST)
    assert Path(again.model).is_file()  # rebuilt by running the answer's candidate again
    assert len(_journal_trials(tmp_path / "run")) == first.candidates_tried + 1
    assert again.candidates_tried == len(again.trials) == first.candidates_tried
    assert sorted(t.candidate for t in again.trials) == sorted(t.candidate for t in first.trials)


def test_prune_fresh_with_other_settings_keeps_nothing_stale(tmp_path: Path) -> None:
    import onnxwootz

    first = onnxwootz.prune(TEACHER, run_dir=tmp_path / "run", **FAST)
    (tmp_path / "run" / "notes.txt").write_text("mine")
    fresh = onnxwootz.prune(TEACHER, run_dir=tmp_path / "run", fresh=True, **{**FAST, "candidates": 2, "seed": 1})
    assert first.candidates == 3 and fresh.candidates == 2
    assert len(json.loads((tmp_path / "run" / "configs.json").read_text())) == 2
    assert len(_journal_trials(tmp_path / "run")) == fresh.candidates_tried
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["candidates"] == 2
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())
    assert recorded["cwd"] == os.getcwd() and "configs.json" in recorded["files"]
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
