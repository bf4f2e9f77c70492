"""Training loops: the teacher's tensors at block boundaries (held or recomputed, the same
values), multiplexed block pre-training (each student learns, and learns exactly what it would
alone), fine-tuning's early stop, and evaluation."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxwootz.runtime.torch_graph import TorchGraph, named_onnx_parameters
from onnxwootz.runtime.training import (
    Student, TeacherTaps, distillation_loss, evaluate, finetune, predict, pretrain_blocks, tensors, with_outputs,
)

OPSET = [helper.make_opsetid("", 17)]


def _conv(rng: np.random.Generator, name: str, cin: int, cout: int, x: str, y: str) -> tuple[list, list]:
    weight = numpy_helper.from_array((rng.standard_normal((cout, cin, 3, 3)) * 0.3).astype(np.float32), f"{name}.w")
    bias = numpy_helper.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), f"{name}.b")
    nodes = [helper.make_node("Conv", [x, weight.name, bias.name], [f"{name}.o"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", [f"{name}.o"], [y])]
    return nodes, [weight, bias]


def _teacher() -> onnx.ModelProto:
    """x -> conv-relu (a) -> conv-relu (b) -> conv-relu (c) -> pool -> flatten -> gemm."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    for name, cin, x, y in (("c1", 2, "x", "a"), ("c2", 4, "a", "b"), ("c3", 4, "b", "c")):
        n, i = _conv(rng, name, cin, 4, x, y)
        nodes += n
        inits += i
    fc = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "fc.w")
    nodes += [helper.make_node("GlobalAveragePool", ["c"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("Gemm", ["f", "fc.w"], ["logits"])]
    graph = helper.make_graph(nodes, "teacher", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 6, 6])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])], inits + [fc])
    return helper.make_model(graph, opset_imports=OPSET, ir_version=8)


def _student(seed: int, entry: str, exit_: str) -> Student:
    """A thinner two-conv block (4 -> 2 -> 4 channels) imitating the teacher from `entry` to `exit_`."""
    rng = np.random.default_rng(seed)
    first, i1 = _conv(rng, "s1", 4, 2, "input", "h")
    second, i2 = _conv(rng, "s2", 2, 4, "h", "output")
    graph = helper.make_graph(first + second, "student",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4, 6, 6])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4, 6, 6])], i1 + i2)
    return Student(f"{entry}->{exit_}", TorchGraph(helper.make_model(graph, opset_imports=OPSET)), entry, exit_)


def _relative_loss(teacher: onnx.ModelProto, student: Student, x: torch.Tensor) -> float:
    with torch.no_grad():
        taps = TorchGraph(with_outputs(teacher, [student.entry, student.exit])).eval()(x)
        return float(torch.nn.functional.mse_loss(student.view(taps[0]), taps[1]) / taps[1].var())


def _weights(student: Student) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in named_onnx_parameters(student.view)}


TRAIN = dict(steps=150, batch=16, lr=3e-2, weight_decay=1e-4, seed=3, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(1).standard_normal((64, 2, 6, 6)).astype(np.float32))


def _taps(teacher: onnx.ModelProto, images: torch.Tensor, **options) -> TeacherTaps:
    return TeacherTaps(teacher, ["x", "a", "b", "c"], images, torch.device("cpu"), **options)


def test_teacher_taps_are_held_when_they_fit_and_recomputed_otherwise(images: torch.Tensor) -> None:
    teacher = _teacher()
    held, streamed = _taps(teacher, images, autocast=False), _taps(teacher, images, autocast=False, budget=0)
    assert held.cache is not None and set(held.cache) == {"a", "b", "c"}
    assert streamed.cache is None
    index = torch.tensor([5, 0, 63, 5])
    rows, recomputed = held.rows(index, ["x", "b", "c"]), streamed.rows(index, ["x", "b", "c"])
    assert set(rows) == set(recomputed) == {"x", "b", "c"}
    torch.testing.assert_close(rows["x"], images[index])
    reference = TorchGraph(with_outputs(teacher, ["b", "c"])).eval()(images[index])
    for name, expected in zip(["b", "c"], reference):
        torch.testing.assert_close(rows[name], expected.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(recomputed[name], expected.detach(), rtol=1e-5, atol=1e-5)
        assert held.variance(name, 16) == pytest.approx(streamed.variance(name, 16), rel=1e-5)


def test_multiplexed_pretraining_lowers_every_students_loss(images: torch.Tensor) -> None:
    teacher = _teacher()
    students = [_student(10, "a", "b"), _student(11, "b", "c"), _student(12, "a", "c")]
    before = [_relative_loss(teacher, s, images) for s in students]
    losses = pretrain_blocks(_taps(teacher, images), students, **TRAIN)
    after = [_relative_loss(teacher, s, images) for s in students]
    assert set(losses) == {s.key for s in students}
    for student, old, new in zip(students, before, after):
        assert new < 0.5 * old, (student.key, old, new)
        assert 0 <= losses[student.key] < old


def test_multiplexed_equals_each_student_alone(images: torch.Tensor) -> None:
    teacher = _teacher()
    together = [_student(10, "a", "b"), _student(11, "b", "c")]
    alone = copy.deepcopy(together)
    taps = _taps(teacher, images)
    joint_losses = pretrain_blocks(taps, together, **TRAIN)
    for joint, single in zip(together, alone):
        single_loss = pretrain_blocks(taps, [single], **TRAIN)[single.key]
        assert single_loss == pytest.approx(joint_losses[joint.key], rel=1e-5)
        for name, value in _weights(single).items():
            torch.testing.assert_close(value, _weights(joint)[name], rtol=1e-5, atol=1e-6)


def _linear_classifier(seed: int) -> TorchGraph:
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array((rng.standard_normal((4, 3)) * 0.01).astype(np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(3, np.float32), "b")
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "w", "b"], ["logits"])], "linear",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])], [weight, bias])
    return TorchGraph(helper.make_model(graph, opset_imports=OPSET))


def _clusters(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three well separated Gaussian clusters in 4-D."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = np.eye(3, 4, dtype=np.float32) * 4
    x = (centres[y] + rng.standard_normal((n, 4))).astype(np.float32)
    return tensors(x, y, torch.device("cpu"))


def test_finetune_stops_as_soon_as_the_bound_is_met() -> None:
    x, y = _clusters(300, 0)
    x_val, y_val = _clusters(200, 1)
    view = _linear_classifier(0)
    assert evaluate(view, x_val, y_val) < 0.9
    outcome = finetune(view, x, y, x_val, y_val, bound=0.9, steps=500, batch=16, lr=0.05, weight_decay=0.0,
                       eval_every=2, seed=0)
    assert outcome.met and 0 < outcome.steps < 500
    assert [step for step, _ in outcome.curve] == list(range(0, outcome.steps + 1, 2))
    assert all(accuracy < 0.9 for _, accuracy in outcome.curve[:-1]) and outcome.accuracy >= 0.9
    assert evaluate(view, x_val, y_val) == outcome.accuracy


def test_finetune_takes_no_step_when_assembly_meets_the_bound() -> None:
    x, y = _clusters(100, 0)
    view = _linear_classifier(0)
    before = {name: p.detach().clone() for name, p in named_onnx_parameters(view)}
    at_assembly = evaluate(view, x, y)
    outcome = finetune(view, x, y, x, y, bound=at_assembly, steps=100, batch=16, lr=0.05, weight_decay=0.0,
                       eval_every=10, seed=0)
    assert outcome.met and outcome.steps == 0 and outcome.curve == [(0, at_assembly)]
    for name, value in named_onnx_parameters(view):
        assert torch.equal(value, before[name])


def test_finetune_reports_a_missed_bound() -> None:
    x, y = _clusters(100, 0)
    outcome = finetune(_linear_classifier(0), x, y, x, y, bound=1.01, steps=6, batch=16, lr=0.05, weight_decay=0.0,
                       eval_every=4, seed=0)
    assert not outcome.met and outcome.steps == 6 and [s for s, _ in outcome.curve] == [0, 4, 6]


def test_evaluate_counts_top1_hits_in_batches() -> None:
    """Logits = the input itself, so the predicted class is the arg-max coordinate."""
    x = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.0, 0.0, 1.0]])
    y = torch.tensor([0, 1, 1, 0, 2])
    identity = torch.nn.Identity()
    identity.train()
    assert evaluate(identity, x, y, batch=2) == pytest.approx(4 / 5)
    assert identity.training
    assert evaluate(identity, x[:0], y[:0]) == 0.0


def test_finetune_gives_back_its_budget_on_a_plateau() -> None:
    """A classifier that learns until it cannot improve (a bound above 1) stops `patience`
    evaluations after its best instead of spending the whole budget."""
    x, y = _clusters(100, 0)
    outcome = finetune(_linear_classifier(0), x, y, x, y, bound=1.1, steps=2000, batch=8, lr=0.05, weight_decay=0.0,
                       eval_every=10, seed=0, patience=2)
    accuracies = [accuracy for _, accuracy in outcome.curve]
    assert not outcome.met and outcome.steps < 2000
    assert max(accuracies[-2:]) <= max(accuracies[:-2]) and accuracies[1] > accuracies[0]
    full = finetune(_linear_classifier(0), x, y, x, y, bound=1.1, steps=200, batch=8, lr=0.05, weight_decay=0.0,
                    eval_every=10, seed=0)
    assert full.steps == 200


def test_finetune_stops_at_once_when_it_does_not_beat_assembly() -> None:
    """With patience, a first evaluation no better than assembly ends fine-tuning (zero
    learning rate: nothing can change)."""
    x, y = _clusters(100, 0)
    outcome = finetune(_linear_classifier(0), x, y, x, y, bound=1.1, steps=200, batch=8, lr=0.0, weight_decay=0.0,
                       eval_every=10, seed=0, patience=3)
    assert outcome.steps == 10 and not outcome.met


def test_distillation_loss_is_zero_only_at_the_teacher() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, 1.0]])
    assert float(distillation_loss(logits, logits)) == pytest.approx(0.0, abs=1e-7)
    assert float(distillation_loss(logits.flip(1), logits)) > 0.1


def test_finetune_by_distillation_needs_no_labels() -> None:
    """A teacher labels nothing here: its logits alone pull a perturbed student back above the
    bound (measured on labelled validation data)."""
    x, _ = _clusters(300, 0)
    x_val, y_val = _clusters(200, 1)
    teacher = _linear_classifier(0)
    with torch.no_grad():
        for _, parameter in named_onnx_parameters(teacher):
            parameter.zero_()
        next(p for name, p in named_onnx_parameters(teacher) if name == "w")[:3] = torch.eye(3)
    teacher_logits = predict(teacher, x)
    assert evaluate(teacher, x_val, y_val) >= 0.95
    student = _linear_classifier(0)
    assert evaluate(student, x_val, y_val) < 0.9
    outcome = finetune(student, x, None, x_val, y_val, bound=0.9, steps=500, batch=16, lr=0.05, weight_decay=0.0,
                       eval_every=5, seed=0, teacher_logits=teacher_logits)
    assert outcome.met and outcome.steps > 0
