"""Block slicing: module spans of a model as standalone graphs. Teacher spans chained in order
reproduce the whole model; a student span (the same span pruned) runs on the teacher's entry
tensor and yields the kept channels of the teacher's exit tensor."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from models.export import cached_export
from onnxwootz.core.errors import BadModelError
from onnxwootz.passes.block_slice import slice_span
from onnxwootz.prepared import prepare
from onnxwootz.pruning import prune_prepared
from onnxwootz.runtime.sessions import cpu_session


def _run(model: onnx.ModelProto, feed: dict) -> np.ndarray:
    return cpu_session(model).run(None, feed)[0]


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_teacher_spans_of_resnet50_chain_to_the_whole_model(exporter: str) -> None:
    prepared = prepare(cached_export("resnet50", exporter))
    units = prepared.units("module").units
    assert len(units) >= 16
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    graph_input = prepared.model.graph.input[0].name
    whole = _run(prepared.model, {graph_input: x})
    hidden = _run(slice_span(prepared.model, graph_input, units[0].entry, prepared.shapes), {graph_input: x})
    for unit in units:
        span = slice_span(prepared.model, unit.entry, unit.exit, prepared.shapes)
        onnx.checker.check_model(span, full_check=True)
        assert len(span.graph.node) < len(prepared.model.graph.node)
        hidden = _run(span, {unit.entry: hidden})
    tail = slice_span(prepared.model, units[-1].exit, prepared.model.graph.output[0].name, prepared.shapes)
    out = _run(tail, {units[-1].exit: hidden})
    np.testing.assert_allclose(out, whole, rtol=1e-5, atol=1e-5 * float(np.abs(whole).max()))


def test_student_span_maps_its_output_channels_to_the_teacher() -> None:
    prepared = prepare(cached_export("vgg_net", "legacy"))  # plain chain: a unit's output group is pruned
    units = prepared.units("module").units
    unit = units[1]
    pruned = prune_prepared(prepared, {unit.name: 0.5})
    keep = pruned.kept_channels(prepared, unit.exit)
    full = prepared.shapes[unit.exit][1]
    assert keep is not None and 0 < len(keep) < full
    shapes = dict(prepared.shapes)
    shapes[unit.exit] = [shapes[unit.exit][0], len(keep), *shapes[unit.exit][2:]]
    student = slice_span(pruned.model, unit.entry, unit.exit, shapes)
    teacher = slice_span(prepared.model, unit.entry, unit.exit, prepared.shapes)
    x = np.abs(np.random.default_rng(1).standard_normal([2, *prepared.shapes[unit.entry][1:]])).astype(np.float32)
    student_out = _run(student, {unit.entry: x})
    teacher_out = _run(teacher, {unit.entry: x})
    assert student_out.shape[1] == len(keep)
    # the kept filters are the teacher's own filters: exact on the kept channels
    np.testing.assert_allclose(student_out, teacher_out[:, keep], rtol=1e-5, atol=1e-6)


def test_span_reading_outside_activations_is_refused() -> None:
    prepared = prepare(cached_export("resnet18", "legacy"))
    units = prepared.units("module").units
    inner = prepared.model.graph.node[len(prepared.model.graph.node) // 2].output[0]
    with pytest.raises(BadModelError):
        slice_span(prepared.model, inner, units[-1].exit, prepared.shapes)
