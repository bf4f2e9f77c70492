"""The run directory: a JSON-lines journal of finished work plus block weights, so that a run
killed at any point continues where it stopped. An event is journaled only after the files
it refers to are written (atomically); a torn last line from a crash is ignored."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from onnxwootz.atomic import write_bytes, write_json
from onnxwootz.errors import BadSpecError


def fingerprint(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


class RunDir:
    """A run directory bound to one run's identity (model, data and spec fingerprint)."""

    def __init__(self, path: str | os.PathLike[str], identity: dict[str, Any], fresh: bool = False):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.journal_path = self.path / "journal.jsonl"
        run_file = self.path / "run.json"
        if fresh:
            for old in (self.journal_path, run_file):
                old.unlink(missing_ok=True)
        if run_file.exists():
            recorded = json.loads(run_file.read_text())
            if recorded.get("identity") != identity:
                raise BadSpecError(f"{self.path} holds a different run (other model, data or spec); "
                                   "pass --fresh to start over or another --run-dir")
        else:
            write_json(run_file, {"identity": identity})
        self.events = list(self._read())

    def _read(self) -> Iterator[dict[str, Any]]:
        if not self.journal_path.exists():
            return
        for line in self.journal_path.read_text().splitlines():
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line from a crash: that step was not finished

    def record(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, default=_plain) + "\n"
        with open(self.journal_path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        self.events.append(json.loads(line))

    def find(self, kind: str, **match: Any) -> dict[str, Any] | None:
        for event in self.events:
            if event.get("event") == kind and all(event.get(k) == v for k, v in match.items()):
                return event
        return None

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event.get("event") == kind]

    def save_arrays(self, relative: str, arrays: dict[str, np.ndarray]) -> Path:
        from safetensors.numpy import save

        return write_bytes(self.path / relative, save({k: np.ascontiguousarray(v) for k, v in arrays.items()}))

    def load_arrays(self, relative: str) -> dict[str, np.ndarray]:
        from safetensors.numpy import load_file

        return load_file(str(self.path / relative))

    def write_json(self, relative: str, obj: Any) -> Path:
        return write_json(self.path / relative, json.loads(json.dumps(obj, default=_plain)))


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
