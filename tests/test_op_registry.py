"""The op registry (passes/ops.py) is consistent: an op the channel analysis accepts (it has a
rule) can be sliced where it carries per-channel data, is counted, and runs in the torch view.
Without this an accepted op could fail late: an unsliced constant makes the pruned model
wrong, a missing converter makes `prune` fail after the analysis said yes."""

from __future__ import annotations

import onnx
import pytest

from onnxwootz.passes import filters
from onnxwootz.passes.ops import DOMAIN_REGISTRY, REGISTRY, Op, no_macs
from onnxwootz.runtime.torch_ops import DOMAIN_OPS, OPS

ACCEPTED = {op: kind for op, kind in REGISTRY.items() if kind.rule is not None or kind.channels_last is not None}
"""Standard-domain ops with a channel rule, on channels-first or channels-last tensors."""
ACCEPTED_DOMAIN = {key: kind for key, kind in DOMAIN_REGISTRY.items() if kind.rule is not None}

UNSLICED = {
    "Concat": "every part needs channel ids: its rule makes a constant part a barrier",
}
"""Accepted ops with more than one data input and no slicer, and why none is needed."""


def _schema(op: str) -> onnx.defs.OpSchema:
    return onnx.defs.get_schema(op, onnx.defs.onnx_opset_version())


def _carries_constants(op: str, kind: Op) -> bool:
    """Whether the op reads data (weights, per-channel constants) beyond its first input."""
    inputs = _schema(op).inputs
    variadic = any(p.option == onnx.defs.OpSchema.FormalParameterOption.Variadic for p in inputs)
    return variadic or any(slot not in kind.parameters for slot in range(1, len(inputs)))


def test_every_accepted_op_runs_in_the_torch_view() -> None:
    """No accepted op lacks a converter (none is analysis-only)."""
    assert sorted(set(ACCEPTED) - set(OPS)) == []
    assert sorted(set(ACCEPTED_DOMAIN) - set(DOMAIN_OPS)) == []


def test_every_accepted_op_is_counted() -> None:
    """Each declares its MACs; the filter producers' are not zero."""
    assert [op for op, kind in {**ACCEPTED, **ACCEPTED_DOMAIN}.items() if kind.macs is None] == []
    producers = {op: kind for op, kind in REGISTRY.items() if kind.filters is not None}
    assert producers and [op for op, kind in producers.items() if kind.macs is no_macs or kind.rule is None] == []


def test_accepted_ops_with_per_channel_data_have_a_slicer() -> None:
    unsliced = {op for op, kind in ACCEPTED.items() if kind.slicer is None and _carries_constants(op, kind)}
    assert unsliced == set(UNSLICED)


@pytest.mark.parametrize("op", sorted(op for op, kind in REGISTRY.items() if kind.parameters))
def test_parameter_slots_are_inputs_of_the_op(op: str) -> None:
    assert max(REGISTRY[op].parameters) < len(_schema(op).inputs)


def test_folding_and_refitting_are_declared_for_filter_producers_only() -> None:
    """BatchNorm folds into a layer's filters; least squares refits conv filters (im2col)."""
    assert [op for op, kind in REGISTRY.items() if kind.folds_bn and kind.filters is None] == []
    assert [op for op, kind in REGISTRY.items() if kind.refit and kind.filters is not filters.CONV] == []
