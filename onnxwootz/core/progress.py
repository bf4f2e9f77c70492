"""One progress interface for long work. The library reports through it and never prints;
the CLI plugs in rich progress bars, a pipeline can log or forward events."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Protocol


class ProgressTask(Protocol):
    def advance(self, amount: float = 1, **info: Any) -> None: ...


class Progress(Protocol):
    """Hook a caller passes in: `task` opens a unit of work with an optional total."""

    def task(self, description: str, total: float | None = None) -> Any:
        """A context manager yielding a ProgressTask."""
        ...


class _NullTask:
    def advance(self, amount: float = 1, **info: Any) -> None:
        return None


class NullProgress:
    """Reports nothing: the default for library calls."""

    @contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[ProgressTask]:
        yield _NullTask()


NULL_PROGRESS = NullProgress()
