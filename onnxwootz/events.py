"""The journal's typed events, one schema each for everyone who writes or reads them: a trial
(one candidate assembled, evaluated and perhaps fine-tuned) and a block (one tuning block
pre-trained). The pipeline builds them, the executors carry them (a Ray worker sends the JSON
form back), `PruneResult.trials` lists them and the report reads them. `to_event()` is the
journal line's object, field for field; `from_event()` reads one back, including lines of
journals written before a field existed (block events before `start_loss` and `kept_start`)."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, ClassVar, TypeVar

from onnxwootz.core.errors import BadSpecError

_Event = TypeVar("_Event", bound="_JournalEvent")


class _JournalEvent:
    """A dataclass journaled as {"event": KIND, ...fields in ORDER}; DEFAULTS are the values of
    fields that older journals may lack."""

    KIND: ClassVar[str]
    ORDER: ClassVar[tuple[str, ...]]
    DEFAULTS: ClassVar[dict[str, Any]] = {}

    def to_event(self) -> dict[str, Any]:
        return {"event": self.KIND, **{name: getattr(self, name) for name in self.ORDER}}

    @classmethod
    def from_event(cls: type[_Event], event: dict[str, Any]) -> _Event:
        """The event of a journal line (keys it does not know are ignored); a line of another
        kind or one missing a field that every journal has is a BadSpecError."""
        if event.get("event") != cls.KIND:
            raise BadSpecError(f"expected a '{cls.KIND}' journal event, got '{event.get('event')}'")
        missing = [name for name in cls.ORDER if name not in event and name not in cls.DEFAULTS]
        if missing:
            raise BadSpecError(f"a '{cls.KIND}' journal event lacks {', '.join(missing)}: {event}")
        return cls(**{name: event[name] if name in event else copy.copy(cls.DEFAULTS[name]) for name in cls.ORDER})


@dataclasses.dataclass
class TrialEvent(_JournalEvent):
    """One explored candidate: its sizes, its metric right after assembly and at the end (and
    that value less the run's noise margin, where it reached the bound: it met the bound when
    this floor did too), the fine-tuning curve ([step, metric] points; step 0 is assembly), each
    look at the confirmation split ([metric, floor] there, taken whenever the floor reached the
    bound; the floor is capped by the confirmation's own slack) and the blocks it used."""

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
    accuracy_floor: float | None = None
    confirmations: list[list[float]] = dataclasses.field(default_factory=list)

    KIND: ClassVar[str] = "trial"
    ORDER: ClassVar[tuple[str, ...]] = ("mode", "candidate", "rates", "params", "macs", "latency_ms",
                                        "accuracy_at_assembly", "accuracy", "accuracy_floor", "confirmations", "met",
                                        "steps", "blocks", "curve", "seconds")
    DEFAULTS: ClassVar[dict[str, Any]] = {"latency_ms": None, "seconds": 0.0, "curve": [], "accuracy_floor": None,
                                          "confirmations": []}


@dataclasses.dataclass
class BlockEvent(_JournalEvent):
    """One pre-trained tuning block: its weights file, the relative loss it ended with and began
    with, and whether its starting weights were kept (training made it worse). `start_loss` is
    None, and `kept_start` False, for blocks journaled before they were measured."""

    file: str
    block: int
    symbols: list[str]
    loss: float
    start_loss: float | None
    kept_start: bool
    seconds: float

    KIND: ClassVar[str] = "block"
    ORDER: ClassVar[tuple[str, ...]] = ("file", "block", "symbols", "loss", "start_loss", "kept_start", "seconds")
    DEFAULTS: ClassVar[dict[str, Any]] = {"start_loss": None, "kept_start": False}
