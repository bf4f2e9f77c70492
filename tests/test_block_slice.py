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
from onnxwootz.passes.units import LARGE_MODULE_SHARE, ActivationOrder, modules
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
    hidden = _run(slice_span(prepared.model, [graph_input], units[0].entries, prepared.shapes), {graph_input: x})
    for unit in units:
        span = slice_span(prepared.model, unit.entries, unit.exits, prepared.shapes)
        onnx.checker.check_model(span, full_check=True)
        assert len(span.graph.node) < len(prepared.model.graph.node)
        hidden = _run(span, {unit.entries[0]: hidden})
    tail = slice_span(prepared.model, units[-1].exits, [prepared.model.graph.output[0].name], prepared.shapes)
    out = _run(tail, {units[-1].exits[0]: hidden})
    np.testing.assert_allclose(out, whole, rtol=1e-5, atol=1e-5 * float(np.abs(whole).max()))


def test_student_span_maps_its_output_channels_to_the_teacher() -> None:
    prepared = prepare(cached_export("vgg_net", "legacy"))  # plain chain: a unit's output group is pruned
    units = prepared.units("module").units
    unit = units[1]
    (entry,), (exit_,) = unit.entries, unit.exits
    pruned = prune_prepared(prepared, {unit.name: 0.5})
    keep = pruned.kept_channels(prepared, exit_)
    full = prepared.shapes[exit_][1]
    assert keep is not None and 0 < len(keep) < full
    shapes = dict(prepared.shapes)
    shapes[exit_] = [shapes[exit_][0], len(keep), *shapes[exit_][2:]]
    student = slice_span(pruned.model, [entry], [exit_], shapes)
    teacher = slice_span(prepared.model, [entry], [exit_], prepared.shapes)
    x = np.abs(np.random.default_rng(1).standard_normal([2, *prepared.shapes[entry][1:]])).astype(np.float32)
    student_out = _run(student, {entry: x})
    teacher_out = _run(teacher, {entry: x})
    assert student_out.shape[1] == len(keep)
    # the kept filters are the teacher's own filters: exact on the kept channels
    np.testing.assert_allclose(student_out, teacher_out[:, keep], rtol=1e-5, atol=1e-6)


def test_span_reading_outside_activations_is_refused() -> None:
    prepared = prepare(cached_export("resnet18", "legacy"))
    units = prepared.units("module").units
    inner = prepared.model.graph.node[len(prepared.model.graph.node) // 2].output[0]
    with pytest.raises(BadModelError):
        slice_span(prepared.model, [inner], units[-1].exits, prepared.shapes)


def test_parked_frontiers_split_a_detector_into_modules_whose_spans_chain_to_the_whole_model() -> None:
    """YOLOv8's backbone feeds its neck from three stages, so no single tensor cuts it: one
    module held 98% of the filter weights. Split at parked frontiers, its modules read and
    write several tensors, and running every module's span in order on the tensors computed
    so far gives the model's output."""
    prepared = prepare(cached_export("yolo_v8", "legacy"))
    order = ActivationOrder(prepared.model)
    module_list = modules(order)
    assert any(len(module.entries) > 1 or len(module.exits) > 1 for module in module_list)
    total = sum(order.weights)
    for module in module_list:
        assert sum(order.weights[order.position[node.name]] for node in module.nodes) <= LARGE_MODULE_SHARE * total
    assert len(prepared.units("module").units) > 20
    graph_input = prepared.model.graph.input[0].name
    x = np.random.default_rng(0).standard_normal((2, *prepared.shapes[graph_input][1:])).astype(np.float32)
    values = {graph_input: x}
    for module in module_list:
        span = slice_span(prepared.model, module.entries, module.exits, prepared.shapes)
        feed = {value.name: values[value.name] for value in span.graph.input}
        values.update(zip(module.exits, cpu_session(span).run(None, feed)))
    whole = _run(prepared.model, {graph_input: x})
    output = prepared.model.graph.output[0].name
    np.testing.assert_allclose(values[output], whole, rtol=1e-4, atol=1e-4 * float(np.abs(whole).max()))


def test_a_block_span_over_units_reads_and_writes_the_tensors_of_its_modules() -> None:
    """A tuning block over consecutive units spans the modules between them too; its entries
    and exits are module boundaries, so the teacher taps hold them."""
    plan = prepare(cached_export("yolo_v8", "legacy")).units("module")
    for start in range(len(plan.units) - 2):
        span = plan.span(start, start + 3)
        assert set(span.entries) | set(span.exits) <= set(plan.boundaries)
        inside = {name for node in span.nodes for name in node.output}
        assert not set(span.entries) & inside and set(span.exits) <= inside


def test_a_chain_units_span_runs_on_to_the_layer_that_reads_its_pruned_channels() -> None:
    """In a plain chain a unit's output group is pruned, so nothing inside its own module loses
    an input: the block's span takes in the next module, whose conv the least-squares start
    then refits, and imitates the teacher's full tensor after it."""
    from onnxwootz.runtime.reconstruction import TeacherTargets, reconstruct_span, refittable_convs

    prepared = prepare(cached_export("vgg_net", "legacy"))
    plan = prepared.units("module")
    unit = plan.units[1]
    assert unit.prunes_exit
    span = plan.span(1, 2)
    after = plan.modules[unit.module + 1]
    assert span.nodes[-1].name == after.nodes[-1].name and span.exits == after.exits
    pruned = prune_prepared(prepared, {unit.name: 0.5})
    for name in span.exits:
        keep = pruned.kept_channels(prepared, name)
        assert keep is None or len(keep) == prepared.shapes[name][1]
    student = slice_span(pruned.model, span.entries, span.exits, prepared.shapes)
    teacher = slice_span(prepared.model, span.entries, span.exits, prepared.shapes)
    assert refittable_convs(student, pruned.canonical_slices)
    feed = prepared.model.graph.input[0].name
    images = np.abs(np.random.default_rng(2).standard_normal([64, *prepared.shapes[feed][1:]])).astype(np.float32)
    (entry,) = span.entries
    x = _run(slice_span(prepared.model, [feed], [entry], prepared.shapes), {feed: images})
    target = _run(teacher, {entry: x})

    def error() -> float:
        return float(np.mean((_run(student, {entry: x}) - target) ** 2) / np.var(target))

    before = error()
    assert reconstruct_span(TeacherTargets(prepared.model, images), student, span.entries, pruned.canonical_slices) >= 1
    assert error() < 0.5 * before
