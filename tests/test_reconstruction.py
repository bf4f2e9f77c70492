"""Least-squares reconstruction of pruned blocks: exact where the removed channel was redundant,
and closer to the teacher than the plain L1-pruned block on a real model's held-out images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxwootz.data import load_dataset
from onnxwootz.passes.block_slice import slice_span
from onnxwootz.preprocess import Preprocess
from onnxwootz.prepared import prepare
from onnxwootz.pruning import prune_prepared
from onnxwootz.runtime.reconstruction import ROWS_PER_UNKNOWN, TeacherTargets, reconstruct_span, refittable_convs
from onnxwootz.runtime.sessions import cpu_session

TEACHER = Path(__file__).resolve().parents[1] / "models" / "digits_resnet.onnx"
OPSET = [helper.make_opsetid("", 17)]


def _two_convs(first: np.ndarray, second: np.ndarray, bias: np.ndarray, group: int = 1) -> onnx.ModelProto:
    """x -> conv (first) -> relu -> conv (second, bias, `group` groups) -> y."""
    inits = [numpy_helper.from_array(first, "c1.w"), numpy_helper.from_array(second, "c2.w"),
             numpy_helper.from_array(bias, "c2.b")]
    nodes = [helper.make_node("Conv", ["x", "c1.w"], ["h"], pads=[1, 1, 1, 1], name="c1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "c2.w", "c2.b"], ["y"], pads=[1, 1, 1, 1], group=group, name="c2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", len(second), 6, 6])], inits)
    return helper.make_model(graph, opset_imports=OPSET, ir_version=8)


def _relative_error(model: onnx.ModelProto, feed_name: str, x: np.ndarray, target: np.ndarray) -> float:
    out = cpu_session(model).run(None, {feed_name: x})[0]
    return float(np.mean((out - target) ** 2) / np.var(target))


def test_a_redundant_channel_is_reconstructed_exactly() -> None:
    """Filter 3 is half of filter 0, so after the ReLU its channel is half of channel 0: the
    second conv can absorb it, and least squares finds how, from the graph input as entry."""
    rng = np.random.default_rng(0)
    first = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    first[3] = 0.5 * first[0]
    second = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(3).astype(np.float32)
    teacher = _two_convs(first, second, bias)
    student = _two_convs(first[:3], np.ascontiguousarray(second[:, :3]), bias)
    slices = {"c1.w": [{"axis": 0, "keep": [0, 1, 2]}], "c2.w": [{"axis": 1, "keep": [0, 1, 2]}]}
    assert [node.name for node in refittable_convs(student, slices)] == ["c2"]
    x = rng.standard_normal((64, 2, 6, 6)).astype(np.float32)
    target = cpu_session(teacher).run(None, {"x": x})[0]
    assert _relative_error(student, "x", x, target) > 0.05
    assert reconstruct_span(TeacherTargets(teacher, x, batch=16), student, ["x"], slices) == 1
    assert _relative_error(student, "x", x, target) < 1e-4


def test_a_grouped_conv_is_reconstructed_group_by_group() -> None:
    """A 2-group conv loses position 1 of each group (channels 1 and 3), each half of the
    group's channel 0: every group's own least squares absorbs its removed channel exactly."""
    rng = np.random.default_rng(2)
    first = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    first[1], first[3] = 0.5 * first[0], 0.5 * first[2]
    second = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    teacher = _two_convs(first, second, bias, group=2)
    student = _two_convs(first[[0, 2]], np.ascontiguousarray(second[:, :1]), bias, group=2)
    slices = {"c1.w": [{"axis": 0, "keep": [0, 2]}], "c2.w": [{"axis": 1, "keep": [0]}]}
    x = rng.standard_normal((64, 2, 6, 6)).astype(np.float32)
    target = cpu_session(teacher).run(None, {"x": x})[0]
    assert _relative_error(student, "x", x, target) > 0.05
    assert reconstruct_span(TeacherTargets(teacher, x, batch=16), student, ["x"], slices) == 1
    assert _relative_error(student, "x", x, target) < 1e-4


def test_refit_blocks_of_the_bundled_teacher_imitate_it_better_on_held_out_images() -> None:
    prepared = prepare(TEACHER)
    data = load_dataset("digits", Preprocess.from_model(prepared.model), 10)
    feed = prepared.model.graph.input[0].name
    for unit in prepared.units("module").units:
        pruned = prune_prepared(prepared, {unit.name: 0.5})
        (entry_name,), (exit_name,) = unit.entries, unit.exits
        student = slice_span(pruned.model, [entry_name], [exit_name], prepared.shapes)
        taps = onnx.ModelProto()
        taps.CopyFrom(prepared.model)
        del taps.graph.output[:]
        for name in (entry_name, exit_name):
            if name != feed:
                taps.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
        outputs = cpu_session(taps).run(None, {feed: data.x_val})
        entry, target = (data.x_val, outputs[0]) if entry_name == feed else outputs
        before = _relative_error(student, entry_name, entry, target)
        assert reconstruct_span(TeacherTargets(prepared.model, data.x_train[:512]), student, [entry_name],
                                pruned.canonical_slices) >= 1
        after = _relative_error(student, entry_name, entry, target)
        assert after < 0.7 * before, (unit.name, before, after)


def test_a_refit_stops_reading_images_once_it_is_well_posed() -> None:
    """c2 solves for 3 x 3 x 3 weights + 1 bias per output = 28 unknowns, 36 output positions
    per image: ROWS_PER_UNKNOWN rows each are reached within the first batches, and the images
    after them change nothing."""
    rng = np.random.default_rng(1)
    first = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    second = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(3).astype(np.float32)
    teacher = _two_convs(first, second, bias)
    slices = {"c1.w": [{"axis": 0, "keep": [0, 1, 2]}], "c2.w": [{"axis": 1, "keep": [0, 1, 2]}]}
    x = rng.standard_normal((1024, 2, 6, 6)).astype(np.float32)
    needed = -(-ROWS_PER_UNKNOWN * 28 // 36)
    enough = -(-needed // 16) * 16

    def refit(images: np.ndarray) -> np.ndarray:
        student = _two_convs(first[:3], np.ascontiguousarray(second[:, :3]), bias)
        reconstruct_span(TeacherTargets(teacher, images, batch=16), student, ["x"], slices)
        return numpy_helper.to_array(next(i for i in student.graph.initializer if i.name == "c2.w"))

    assert enough < len(x)
    np.testing.assert_array_equal(refit(x), refit(x[:enough]))
    assert not np.array_equal(refit(x), refit(x[:enough - 16]))


def test_teacher_targets_run_the_teacher_once_per_batch_for_every_refit_that_shares_them() -> None:
    """The profile refits one span at several rates: the second refit reads the kept tensors
    (the same arrays, no new teacher run) and fits exactly what a fresh set would give."""
    rng = np.random.default_rng(3)
    first = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    second = rng.standard_normal((3, 4, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(3).astype(np.float32)
    teacher = _two_convs(first, second, bias)
    x = rng.standard_normal((64, 2, 6, 6)).astype(np.float32)
    shared = TeacherTargets(teacher, x, batch=16)

    def refit(kept: int, targets: TeacherTargets) -> np.ndarray:
        student = _two_convs(first[:kept], np.ascontiguousarray(second[:, :kept]), bias)
        slices = {"c1.w": [{"axis": 0, "keep": list(range(kept))}], "c2.w": [{"axis": 1, "keep": list(range(kept))}]}
        assert reconstruct_span(targets, student, ["x"], slices) == 1
        return numpy_helper.to_array(next(i for i in student.graph.initializer if i.name == "c2.w"))

    refit(3, shared)
    kept = shared.values(0, ["x", "y"])
    again = refit(2, shared)
    assert shared.values(0, ["y"])["y"] is kept["y"]
    np.testing.assert_array_equal(again, refit(2, TeacherTargets(teacher, x, batch=16)))
    np.testing.assert_array_equal(kept["x"], x[:16])
