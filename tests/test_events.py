"""The journal's typed events: `to_event()` is the journal line's object (same fields, same
order), JSON and back gives the same event, lines written before a field existed still read,
and a line that is not the event's kind, or lacks a field, is one clear error."""

from __future__ import annotations

import json

import pytest

from onnxwootz.core.errors import BadSpecError
from onnxwootz.events import BlockEvent, TrialEvent

TRIAL = TrialEvent(mode="method", candidate=3, rates=[0.7, 0.5], params=14120, macs=1452352, latency_ms=None,
                   accuracy_at_assembly=0.1142, accuracy=0.9888, met=True, steps=50, seconds=1.5, blocks=[0, 1],
                   curve=[[0, 0.1142], [50, 0.9888]], accuracy_floor=0.9801, confirmations=[[0.9911, 0.9845]])
BLOCK = BlockEvent(file="blocks/0123456789abcdef.safetensors", block=2, symbols=["0(.7)", "1(.5)"], loss=0.01,
                   start_loss=0.02, kept_start=False, seconds=2.5)


def test_trial_event_is_the_journal_line_and_survives_json() -> None:
    line = json.dumps(TRIAL.to_event())
    assert list(json.loads(line)) == ["event", "mode", "candidate", "rates", "params", "macs", "latency_ms",
                                      "accuracy_at_assembly", "accuracy", "accuracy_floor", "confirmations", "met",
                                      "steps", "blocks", "curve", "seconds"]
    assert TrialEvent.from_event(json.loads(line)) == TRIAL


def test_block_event_survives_json() -> None:
    event = json.loads(json.dumps(BLOCK.to_event()))
    assert event["event"] == "block" and BlockEvent.from_event(event) == BLOCK


def test_old_journal_lines_still_read() -> None:
    """A block line from before blocks recorded their starting loss (as those journals hold it)."""
    old = json.loads('{"event": "block", "file": "blocks/a.safetensors", "block": 0, "symbols": ["0(.7)"], '
                     '"loss": 0.1, "seconds": 2.0}')
    block = BlockEvent.from_event(old)
    assert (block.loss, block.start_loss, block.kept_start, block.seconds) == (0.1, None, False, 2.0)
    trial = TrialEvent.from_event({k: v for k, v in TRIAL.to_event().items()
                                   if k not in ("seconds", "curve", "accuracy_floor", "confirmations")})
    assert (trial.seconds, trial.curve, trial.accuracy, trial.accuracy_floor, trial.confirmations) == \
        (0.0, [], TRIAL.accuracy, None, [])
    assert TrialEvent.from_event({**TRIAL.to_event(), "later_field": 1}) == TRIAL  # unknown keys are ignored


def test_a_line_of_another_kind_or_missing_a_field_is_one_clear_error() -> None:
    with pytest.raises(BadSpecError, match="expected a 'trial'"):
        TrialEvent.from_event(BLOCK.to_event())
    with pytest.raises(BadSpecError, match="lacks params"):
        TrialEvent.from_event({k: v for k, v in TRIAL.to_event().items() if k != "params"})
