"""The run directory: a JSON-lines journal of finished work plus block weights, so that a run
killed at any point continues where it stopped, and nothing it holds can be corrupted:

- An event is journaled only after the files it refers to are written (atomically); a line is
  committed once its newline is on disk. A torn last line from a crash is cut off before the
  next append, so it cannot swallow the next event; a failed append (full disk) is undone.
- One process at a time: the writer holds an exclusive flock on `run.lock` for the RunDir's
  lifetime (the OS drops it when the process dies, even by SIGKILL); a second process gets one
  clear error naming the holder. Readers that only need the finished work (Ray workers) open
  with `lock=False` and write nothing.
- `run.json` holds the run's identity, the working directory of the latest run (relative paths
  in summary.json are relative to it), and the derived files written under this identity: a
  tool file that is not listed there is stale (another run's, or a crash before its listing)
  and is removed, never reused. `fresh` removes every file the tool wrote, and nothing else.
- The latest event per key supersedes earlier ones (a candidate re-run because its answer file
  was lost has one trial, not two)."""

from __future__ import annotations

import datetime
import fcntl
import fnmatch
import hashlib
import itertools
import json
import os
import socket
import weakref
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from onnxwootz.core.atomic import fsync_dir, write_bytes, write_json
from onnxwootz.core.errors import BadSpecError, RunDirBusyError

RUN_FILE, JOURNAL_FILE, LOCK_FILE = "run.json", "journal.jsonl", "run.lock"
DERIVED = ("configs.json", "sensitivity.json", "blocks.json", "summary.json", "blocks/*.safetensors")
"""Files written through RunDir under the run's identity (listed in run.json)."""
TOOL_FILES = (RUN_FILE, JOURNAL_FILE, LOCK_FILE, *DERIVED, "*.pruned.onnx", "*.pruned.onnx.data",
              "report/report.md", "report/report.html", "report/accuracy_vs_params.png",
              "report/accuracy_vs_macs.png", "report/accuracy_vs_latency.png", "report/finetune_curves.png")
"""Everything `prune` and `report` write in a run directory (the answer by its default name)."""
LEFTOVERS = (".*.tmp", "*.pruned.onnx.data.tmp", "blocks/.*.tmp", "report/.*.tmp")
"""Temporary files of an atomic write cut short by a crash (core/atomic.py, core/modelio.save_model)."""
EVENT_KEYS = {"trial": ("mode", "candidate"), "latency": ("candidate",), "block": ("file",), "teacher": ()}
"""What makes events of a kind the same piece of work: a later one supersedes an earlier one."""


def fingerprint(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def read_events(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The committed events of a journal file: lines ending in a newline that parse as JSON
    objects (a torn last line was not finished)."""
    path = Path(path)
    if not path.exists():
        return []
    events = []
    for line in path.read_bytes().split(b"\n")[:-1]:
        try:
            event = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def latest(events: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Events of one kind, the latest per key (EVENT_KEYS) at the place its key first appeared;
    a kind without a key keeps every event."""
    fields = EVENT_KEYS.get(kind)
    chosen: dict[Any, dict[str, Any]] = {}
    for number, event in enumerate(e for e in events if e.get("event") == kind):
        key = number if fields is None else json.dumps([event.get(f) for f in fields], default=str)
        chosen[key] = event  # a dict keeps the first insertion's place and the last value
    return list(chosen.values())


class RunDir:
    """A run directory bound to one run's identity (model, data and spec fingerprint).

    `lock=True` (the driver): exclusive for this process until `close()` or until the RunDir is
    garbage-collected; several RunDirs of one process on one path share the lock. `lock=False`
    (a worker reading the driver's finished work): no lock, no repair, no writes."""

    def __init__(self, path: str | os.PathLike[str], identity: dict[str, Any], fresh: bool = False,
                 lock: bool = True):
        self.path = Path(path)
        self.identity = identity
        self.journal_path = self.path / JOURNAL_FILE
        self.writable = lock
        self._release: weakref.finalize | None = None
        if not lock:
            self._check_identity(_read_run_file(self.path))
            self.events = read_events(self.journal_path)
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self._refuse_foreign(fresh)
        self._release = weakref.finalize(self, _Lock.acquire(self.path).release)
        try:
            self._open(fresh)
        except BaseException:
            self.close()
            raise

    def _open(self, fresh: bool) -> None:
        for leftover in _matching(self.path, LEFTOVERS):
            leftover.unlink(missing_ok=True)
        if fresh:
            _remove_tool_files(self.path)
        recorded = _read_run_file(self.path)
        if recorded is None and any(p.name != LOCK_FILE for p in _matching(self.path, TOOL_FILES)):
            raise BadSpecError(f"{self.path} holds onnxwootz files but no {RUN_FILE} (whose run they are is "
                               "unknown); pass --fresh to start over or another --run-dir")
        self._check_identity(recorded)
        files = set(recorded["files"]) if recorded and "files" in recorded else None
        if files is None:  # a new run, or one written before run.json listed its files: adopt them
            files = {p.relative_to(self.path).as_posix() for p in _matching(self.path, DERIVED)}
        for stale in _matching(self.path, DERIVED):
            if stale.relative_to(self.path).as_posix() not in files:
                stale.unlink()
        self.files = {name for name in files if (self.path / name).is_file()}
        self._write_run_file()
        self._repair()
        self.events = read_events(self.journal_path)

    def _refuse_foreign(self, fresh: bool) -> None:
        """Never write into (or clean) a folder of someone else's files."""
        if (self.path / RUN_FILE).exists():
            return
        relative = (p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file())
        foreign = list(itertools.islice((name for name in relative if not _owned(name)), 4))  # a big folder: stop early
        if foreign:
            shown = ", ".join(sorted(foreign)[:3]) + (", ..." if len(foreign) > 3 else "")
            raise BadSpecError(f"{self.path} is not an onnxwootz run directory and holds other files ({shown}); "
                               f"{'--fresh removes only its own files, so ' if fresh else ''}"
                               "pass a new or empty --run-dir")

    def _check_identity(self, recorded: dict[str, Any] | None) -> None:
        if recorded is not None and recorded.get("identity") != self.identity:
            raise BadSpecError(f"{self.path} holds a different run (other model, data or spec); "
                               "pass --fresh to start over or another --run-dir")

    def _write_run_file(self) -> None:
        write_json(self.path / RUN_FILE, {"identity": self.identity, "fingerprint": fingerprint(self.identity),
                                          "cwd": os.getcwd(), "files": sorted(self.files)})

    def _writer(self) -> None:
        if not self.writable:
            raise RuntimeError(f"{self.path} is closed or was opened with lock=False: it cannot be written")

    # -- the journal --------------------------------------------------------------------------------
    def _repair(self) -> None:
        """Cut a torn last line (no newline: not committed) so the next append starts a line."""
        if not self.journal_path.exists():
            return
        with open(self.journal_path, "rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return
            handle.seek(0)
            handle.truncate(handle.read().rfind(b"\n") + 1)
            handle.flush()
            os.fsync(handle.fileno())

    def record(self, event: dict[str, Any]) -> None:
        """Append one finished event durably; on any failure (a full disk) the journal is left
        exactly as it was and the error is raised."""
        self._writer()
        line = (json.dumps(event, default=_plain) + "\n").encode()
        self._repair()
        created = not self.journal_path.exists()
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            size = os.fstat(fd).st_size
            try:
                written = 0
                while written < len(line):
                    written += os.write(fd, line[written:])
                os.fsync(fd)
            except BaseException:
                os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.path)
        self.events.append(json.loads(line))

    def find(self, kind: str, **match: Any) -> dict[str, Any] | None:
        """The latest event of `kind` whose fields equal `match`."""
        for event in reversed(self.events):
            if event.get("event") == kind and all(event.get(k) == v for k, v in match.items()):
                return event
        return None

    def all(self, kind: str) -> list[dict[str, Any]]:
        """Events of `kind`, one per piece of work (the latest; see `latest`)."""
        return latest(self.events, kind)

    # -- derived files ------------------------------------------------------------------------------
    def save_arrays(self, relative: str, arrays: dict[str, np.ndarray]) -> Path:
        from safetensors.numpy import save

        self._writer()
        path = write_bytes(self.path / relative, save({k: np.ascontiguousarray(v) for k, v in arrays.items()}))
        self._list(relative)
        return path

    def load_arrays(self, relative: str) -> dict[str, np.ndarray]:
        from safetensors.numpy import load_file

        return load_file(str(self.path / relative))

    def write_json(self, relative: str, obj: Any) -> Path:
        self._writer()
        path = write_json(self.path / relative, json.loads(json.dumps(obj, default=_plain)))
        self._list(relative)
        return path

    def _list(self, relative: str) -> None:
        """List a derived file in run.json once it is written, so that it counts as this run's."""
        name = Path(relative).as_posix()
        if name not in self.files:
            self.files.add(name)
            self._write_run_file()

    def close(self) -> None:
        """Release the lock (also done when the RunDir is garbage-collected or the process ends)."""
        if self._release is not None:
            self._release()  # runs at most once, here or at garbage collection
        self.writable = False

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _remove_tool_files(path: Path) -> None:
    """Remove every file onnxwootz writes in a run directory (except the lock) and the folders
    that leaves empty; other files stay."""
    for file in _matching(path, TOOL_FILES + LEFTOVERS):
        if file.name != LOCK_FILE:
            file.unlink()
    for folder in ("blocks", "report"):
        try:
            (path / folder).rmdir()
        except OSError:
            pass  # absent, or holds someone else's files


class _Lock:
    """The exclusive flock on `run.lock`, shared by the RunDirs of one process on one path."""

    held: dict[tuple[int, str], "_Lock"] = {}

    def __init__(self, key: tuple[int, str], fd: int):
        self.key, self.fd, self.users = key, fd, 1

    @classmethod
    def acquire(cls, path: Path) -> "_Lock":
        key = (os.getpid(), str(path.resolve()))  # the pid: a forked child does not inherit the lock
        if key in cls.held:
            cls.held[key].users += 1
            return cls.held[key]
        fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            record = _holder_record(fd)
            os.close(fd)
            who = (f"pid {record.get('pid')} on {record.get('host')}, since {record.get('started')}"
                   if record else "a process that is starting")
            raise RunDirBusyError(f"{path} is in use by another onnxwootz run ({who}); wait for it to finish "
                                  "or pass another --run-dir") from None
        except BaseException:
            os.close(fd)
            raise
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started})
                       + "\n").encode(), 0)
        lock = cls(key, fd)
        cls.held[key] = lock
        return lock

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            del self.held[self.key]
            os.close(self.fd)  # closing the last descriptor drops the flock


def _holder_record(fd: int) -> dict[str, Any] | None:
    try:
        record = json.loads(os.pread(fd, 4096, 0))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # the holder has not written it yet
    return record if isinstance(record, dict) else None


def _read_run_file(path: Path) -> dict[str, Any] | None:
    run_file = path / RUN_FILE
    if not run_file.exists():
        return None
    try:
        recorded = json.loads(run_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        recorded = None
    if not isinstance(recorded, dict):
        raise BadSpecError(f"{run_file} is not an onnxwootz run file; pass --fresh to start over")
    return recorded


def _matches(relative: str, patterns: tuple[str, ...]) -> bool:
    """`relative` (a/b) matches a pattern folder for folder, name by glob (`*` never spans a /)."""
    folder, _, name = relative.rpartition("/")
    return any(folder == pattern.rpartition("/")[0] and fnmatch.fnmatchcase(name, pattern.rpartition("/")[2])
               for pattern in patterns)


def _owned(relative: str) -> bool:
    return _matches(relative, TOOL_FILES + LEFTOVERS)


def _matching(path: Path, patterns: tuple[str, ...]) -> list[Path]:
    """Files directly in `path` or in its blocks/ and report/ folders matching `patterns`."""
    return [entry for folder in (path, path / "blocks", path / "report") if folder.is_dir()
            for entry in sorted(folder.iterdir())
            if entry.is_file() and _matches(entry.relative_to(path).as_posix(), patterns)]


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
