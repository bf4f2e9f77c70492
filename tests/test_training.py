"""Training loops: the teacher's tensors at block boundaries (held or recomputed, the same
values), multiplexed block pre-training (each student learns, and learns exactly what it would
alone), fine-tuning's early stop, and evaluation."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxwootz.runtime.torch_graph import TorchGraph, named_onnx_parameters
from onnxwootz.runtime.training import (
    FinetuneConfig, OutputKind, PretrainConfig, Scored, Student, TeacherTaps, distillation_loss, distillation_of,
    evaluate, finetune, finetune_with, out_of_reach, output_kinds, output_loss, predict, predict_outputs,
    pretrain_blocks, tensors, with_outputs,
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
    return Student(f"{entry}->{exit_}", TorchGraph(helper.make_model(graph, opset_imports=OPSET)), (entry,), (exit_,))


def _relative_loss(teacher: onnx.ModelProto, student: Student, x: torch.Tensor) -> float:
    with torch.no_grad():
        taps = TorchGraph(with_outputs(teacher, [*student.entries, *student.exits])).eval()(x)
        return float(torch.nn.functional.mse_loss(student.view(taps[0]), taps[1]) / taps[1].var())


def _weights(student: Student) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in named_onnx_parameters(student.view)}


TRAIN = PretrainConfig(steps=150, batch=16, lr=3e-2, weight_decay=1e-4, seed=3)
CPU = torch.device("cpu")


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
    fits = pretrain_blocks(_taps(teacher, images), students, TRAIN, CPU)
    after = [_relative_loss(teacher, s, images) for s in students]
    assert set(fits) == {s.key for s in students}
    for student, old, new in zip(students, before, after):
        assert new < 0.5 * old, (student.key, old, new)
        fit = fits[student.key]
        assert not fit.kept_start and 0 <= fit.loss < fit.start_loss


def _two_way_student(seed: int) -> Student:
    """A block with two entries and two exits (a span cut at parked frontiers): from teacher
    tensors a and b, a thin conv pair imitates b and another imitates c."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    for name, x, y in (("p", "in_a", "out_b"), ("q", "in_b", "out_c")):
        first, i1 = _conv(rng, f"{name}1", 4, 2, x, f"{name}.h")
        second, i2 = _conv(rng, f"{name}2", 2, 4, f"{name}.h", y)
        nodes += first + second
        inits += i1 + i2
    value = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 4, 6, 6])  # noqa: E731
    graph = helper.make_graph(nodes, "student", [value("in_a"), value("in_b")], [value("out_b"), value("out_c")], inits)
    return Student("a,b->b,c", TorchGraph(helper.make_model(graph, opset_imports=OPSET)), ("a", "b"), ("b", "c"))


def test_a_student_with_several_entries_and_exits_learns_every_exit(images: torch.Tensor) -> None:
    teacher = _teacher()
    student = _two_way_student(20)

    def losses() -> list[float]:
        with torch.no_grad():
            a, b, c = TorchGraph(with_outputs(teacher, ["a", "b", "c"])).eval()(images)
            outputs = student.view(a, b)
            return [float(torch.nn.functional.mse_loss(out, target) / target.var()) for out, target in zip(outputs, (b, c))]

    before = losses()
    fit = pretrain_blocks(_taps(teacher, images), [student], TRAIN, CPU)[student.key]
    after = losses()
    for old, new in zip(before, after):
        assert new < 0.5 * old, (before, after)
    assert not fit.kept_start and fit.loss < fit.start_loss
    assert fit.start_loss == pytest.approx(np.mean(before), rel=0.2)


def test_pretraining_that_makes_a_student_worse_puts_its_start_back(images: torch.Tensor) -> None:
    """A learning rate far too large for the weights (what 0.01 is for a least-squares start of a
    real PP-OCRv4 block) must not leave the block worse than it began."""
    teacher = _teacher()
    student = _student(10, "a", "b")
    start = _weights(student)
    too_fast = dataclasses.replace(TRAIN, lr=50.0, steps=20)
    fit = pretrain_blocks(_taps(teacher, images), [student], too_fast, CPU)[student.key]
    assert fit.kept_start and fit.loss == fit.start_loss
    for name, value in _weights(student).items():
        torch.testing.assert_close(value, start[name], rtol=0, atol=0)


def test_a_students_frozen_weights_keep_their_values(images: torch.Tensor) -> None:
    """A layer another block trains (one that reads a chain unit's cut channels) stays as it
    is; the rest of the block learns around it."""
    teacher = _teacher()
    student = dataclasses.replace(_student(10, "a", "b"), frozen=frozenset({"s1.w", "s1.b"}))
    start = _weights(student)
    fit = pretrain_blocks(_taps(teacher, images), [student], TRAIN, CPU)[student.key]
    after = _weights(student)
    assert not fit.kept_start and fit.loss < fit.start_loss
    for name in student.frozen:
        torch.testing.assert_close(after[name], start[name], rtol=0, atol=0)
    assert not torch.equal(after["s2.w"], start["s2.w"])


def test_a_student_that_starts_exact_is_not_trained(images: torch.Tensor) -> None:
    """A chain unit's block that only drops output channels keeps the teacher's own filters
    for the kept ones: nothing to learn, so no steps are spent on it."""
    from onnxwootz.passes.block_slice import slice_span

    teacher = _teacher()
    shapes = {"a": [1, 4, 6, 6], "b": [1, 4, 6, 6]}
    exact = Student("a->b exact", TorchGraph(slice_span(teacher, ["a"], ["b"], shapes)), ("a",), ("b",))
    learner = _student(10, "a", "b")
    start = _weights(exact)
    fits = pretrain_blocks(_taps(teacher, images), [exact, learner], TRAIN, CPU)
    assert fits[exact.key].start_loss < 1e-9 and fits[exact.key].loss == fits[exact.key].start_loss
    for name, value in _weights(exact).items():
        torch.testing.assert_close(value, start[name], rtol=0, atol=0)
    assert fits[learner.key].loss < 0.5 * fits[learner.key].start_loss


def test_multiplexed_equals_each_student_alone(images: torch.Tensor) -> None:
    teacher = _teacher()
    together = [_student(10, "a", "b"), _student(11, "b", "c")]
    alone = copy.deepcopy(together)
    taps = _taps(teacher, images)
    joint_fits = pretrain_blocks(taps, together, TRAIN, CPU)
    for joint, single in zip(together, alone):
        single_fit = pretrain_blocks(taps, [single], TRAIN, CPU)[single.key]
        assert single_fit.loss == pytest.approx(joint_fits[joint.key].loss, rel=1e-5)
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
    outcome = finetune(view, x, y, x_val, y_val, bound=0.9,
        config=FinetuneConfig(steps=500, batch=16, lr=0.05, weight_decay=0.0, eval_every=2, seed=0))
    assert outcome.met and 0 < outcome.steps < 500
    assert [step for step, _ in outcome.curve] == list(range(0, outcome.steps + 1, 2))
    assert all(accuracy < 0.9 for _, accuracy in outcome.curve[:-1]) and outcome.accuracy >= 0.9
    assert evaluate(view, x_val, y_val) == outcome.accuracy


def test_finetune_takes_no_step_when_assembly_meets_the_bound() -> None:
    x, y = _clusters(100, 0)
    view = _linear_classifier(0)
    before = {name: p.detach().clone() for name, p in named_onnx_parameters(view)}
    at_assembly = evaluate(view, x, y)
    outcome = finetune(view, x, y, x, y, bound=at_assembly,
        config=FinetuneConfig(steps=100, batch=16, lr=0.05, weight_decay=0.0, eval_every=10, seed=0))
    assert outcome.met and outcome.steps == 0 and outcome.curve == [(0, at_assembly)]
    for name, value in named_onnx_parameters(view):
        assert torch.equal(value, before[name])


def test_finetune_reports_a_missed_bound() -> None:
    x, y = _clusters(100, 0)
    outcome = finetune(_linear_classifier(0), x, y, x, y, bound=1.01,
        config=FinetuneConfig(steps=6, batch=16, lr=0.05, weight_decay=0.0, eval_every=4, seed=0))
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
    outcome = finetune(_linear_classifier(0), x, y, x, y, bound=1.1,
        config=FinetuneConfig(steps=2000, batch=8, lr=0.05, weight_decay=0.0, eval_every=10, seed=0, patience=2))
    accuracies = [accuracy for _, accuracy in outcome.curve]
    assert not outcome.met and outcome.steps < 2000
    assert max(accuracies[-2:]) <= max(accuracies[:-2]) and accuracies[1] > accuracies[0]
    full = finetune(_linear_classifier(0), x, y, x, y, bound=1.1,
        config=FinetuneConfig(steps=200, batch=8, lr=0.05, weight_decay=0.0, eval_every=10, seed=0))
    assert full.steps == 200


def test_finetune_that_does_not_beat_assembly_stops_at_its_second_evaluation_with_projection() -> None:
    """Zero learning rate: nothing can change. With the projection the flat curve is out of reach
    at its second evaluation; with the plateau rule alone, at its third (patience 3): one
    evaluation no better than assembly no longer ends it."""
    x, y = _clusters(100, 0)
    config = FinetuneConfig(steps=200, batch=8, lr=0.0, weight_decay=0.0, eval_every=10, seed=0, patience=3,
                            projection=True)
    outcome = finetune(_linear_classifier(0), x, y, x, y, bound=1.1, config=config)
    assert outcome.steps == 20 and not outcome.met
    plateau = finetune(_linear_classifier(0), x, y, x, y, bound=1.1,
                       config=dataclasses.replace(config, projection=False))
    assert plateau.steps == 30 and not plateau.met


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
    outcome = finetune(student, x, None, x_val, y_val, bound=0.9,
        config=FinetuneConfig(steps=500, batch=16, lr=0.05, weight_decay=0.0, eval_every=5, seed=0),
        teacher_logits=teacher_logits)
    assert outcome.met and outcome.steps > 0


def _three_heads(seed: int) -> onnx.ModelProto:
    """x [n, 2, 6, 6] -> conv-relu -> a softmax over 3 classes, a sigmoid map [n, 1, 6, 6],
    logits [n, 3] and a raw feature map [n, 4, 6, 6]: one output of each kind."""
    rng = np.random.default_rng(seed)
    nodes, inits = _conv(rng, "c1", 2, 4, "x", "a")
    head = numpy_helper.from_array((rng.standard_normal((1, 4, 1, 1)) * 0.5).astype(np.float32), "m.w")
    fc = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "fc.w")
    nodes += [helper.make_node("Conv", ["a", "m.w"], ["m"]), helper.make_node("Sigmoid", ["m"], ["prob"]),
              helper.make_node("GlobalAveragePool", ["a"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("Gemm", ["f", "fc.w"], ["logits"]), helper.make_node("Softmax", ["logits"], ["soft"]),
              helper.make_node("Identity", ["a"], ["features"])]
    value = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)  # noqa: E731
    graph = helper.make_graph(nodes, "heads", [value("x", ["n", 2, 6, 6])],
                              [value("soft", ["n", 3]), value("prob", ["n", 1, 6, 6]), value("logits", ["n", 3]),
                               value("features", ["n", 4, 6, 6])], inits + [head, fc])
    return helper.make_model(graph, opset_imports=OPSET, ir_version=8)


def test_output_kinds_come_from_the_producing_op() -> None:
    model = _three_heads(0)
    shapes = {"soft": [1, 3], "prob": [1, 1, 6, 6], "logits": [1, 3], "features": [1, 4, 6, 6]}
    assert output_kinds(model, shapes) == [OutputKind("softmax", -1), OutputKind("sigmoid"), OutputKind("logits"),
                                           OutputKind("tensor")]


@pytest.mark.parametrize("kind", [OutputKind("softmax", 1), OutputKind("sigmoid"), OutputKind("logits"),
                                  OutputKind("tensor")])
def test_each_output_loss_is_zero_only_at_the_teacher(kind: OutputKind) -> None:
    raw = torch.randn(8, 3, 5, generator=torch.Generator().manual_seed(0))
    teacher = {"softmax": raw.softmax(1), "sigmoid": raw.sigmoid()}.get(kind.kind, raw)
    other = {"softmax": raw.flip(1).softmax(1), "sigmoid": (-raw).sigmoid()}.get(kind.kind, -raw)
    if kind.kind == "logits":
        teacher, other = raw[:, :, 0], -raw[:, :, 0]
    variance = float(teacher.var())
    assert float(output_loss(kind, teacher, teacher, variance)) == pytest.approx(0.0, abs=1e-5)
    assert float(output_loss(kind, other, teacher, variance)) > 0.05


def test_distilling_every_output_pulls_a_student_back_to_its_teacher(images: torch.Tensor) -> None:
    """A student from other weights: distillation on every output (no labels) raises its mean
    agreement with the teacher's outputs, each measured on held-out images."""
    teacher, student = _three_heads(0), TorchGraph(_three_heads(5))
    names = [output.name for output in teacher.graph.output]
    shapes = {"soft": [1, 3], "prob": [1, 1, 6, 6], "logits": [1, 3], "features": [1, 4, 6, 6]}
    taps = TeacherTaps(teacher, names, images, torch.device("cpu"), autocast=False)
    held_out = torch.from_numpy(np.random.default_rng(9).standard_normal((32, 2, 6, 6)).astype(np.float32))
    reference = predict_outputs(TorchGraph(teacher), held_out)

    def closeness(view) -> Scored:
        outputs = predict_outputs(view, held_out)
        return Scored.exact(float(np.mean([1 - np.square(s - t).sum() / np.square(t - t.mean()).sum()
                                           for s, t in zip(outputs, reference)])))

    before = closeness(student).value
    loss = distillation_of(taps, names, output_kinds(teacher, shapes), batch=16)
    outcome = finetune_with(student, images, loss, closeness, bound=2.0,
        config=FinetuneConfig(steps=150, batch=16, lr=3e-2, weight_decay=0.0, eval_every=50, seed=0))
    assert [len(o) for o in predict_outputs(student, images[:5])] == [5, 5, 5, 5]
    assert outcome.curve[0][1] == pytest.approx(before) and outcome.accuracy > before + 0.3


def test_teacher_taps_fall_back_to_bf16_before_recomputing(images: torch.Tensor) -> None:
    teacher = _teacher()
    full = _taps(teacher, images, autocast=False)
    float32_bytes = 4 * (4 * 6 * 6) * 3 * len(images)  # a, b, c: 4 channels of 6x6 each
    half = _taps(teacher, images, autocast=False, budget=float32_bytes - 1)
    none = _taps(teacher, images, autocast=False, budget=float32_bytes // 2 - 1)
    assert full.cache["a"].dtype == torch.float32 and half.cache["a"].dtype == torch.bfloat16 and none.cache is None
    index = torch.arange(10)
    for name in "abc":
        exact = none.rows(index, [name])[name]
        torch.testing.assert_close(half.rows(index, [name])[name], exact, rtol=1e-2, atol=1e-2)
        torch.testing.assert_close(full.rows(index, [name])[name], exact)


def _conv_bn_classifier() -> TorchGraph:
    """x -> conv -> BatchNormalization (running statistics as initializers) -> pool -> gemm."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(value.astype(np.float32), name) for name, value in (
        ("w", rng.standard_normal((4, 2, 3, 3))), ("scale", np.ones(4)), ("bias", np.zeros(4)),
        ("mean", np.full(4, 0.5)), ("var", np.full(4, 2.0)), ("fc", rng.standard_normal((4, 3))))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["b"]),
             helper.make_node("GlobalAveragePool", ["b"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["logits"])]
    graph = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 6, 6])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])], inits)
    return TorchGraph(helper.make_model(graph, opset_imports=OPSET, ir_version=8))


@pytest.mark.parametrize("frozen", [False, True])
def test_finetuning_with_frozen_statistics_keeps_batchnorms_running_statistics(frozen: bool) -> None:
    """`frozen_statistics` trains in eval mode: the weights move, BatchNorm's running statistics
    stay the teacher's; with batch statistics (train mode) they follow the batches."""
    view = _conv_bn_classifier()
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((64, 2, 6, 6)).astype(np.float32) * 3 + 1)
    before = {name: value.detach().clone() for name, value in view.state_dict().items()}
    names = view.param_names
    finetune_with(view, x, lambda outputs, index: outputs[0].square().mean(), lambda v: Scored.exact(0.0), 1.0,
                  FinetuneConfig(steps=10, batch=16, lr=0.01, weight_decay=0.0, eval_every=5, seed=0,
                                 autocast=False, frozen_statistics=frozen))
    after = view.state_dict()
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    assert names["w"] in moved and names["fc"] in moved
    assert (names["mean"] in moved and names["var"] in moved) is not frozen
    assert (names["mean"] not in moved and names["var"] not in moved) is frozen


def test_a_candidate_meets_the_bound_only_when_its_floor_does() -> None:
    """The bound is checked on the floor (value less the noise margin), the curve keeps the
    value: a value above the bound with a floor below it goes on fine-tuning."""
    view = _conv_bn_classifier()
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((32, 2, 6, 6)).astype(np.float32))
    config = FinetuneConfig(steps=10, batch=8, lr=0.01, weight_decay=0.0, eval_every=5, seed=0, autocast=False,
                            patience=0)
    scores = iter([Scored(0.95, 0.89), Scored(0.96, 0.93), Scored(0.97, 0.91)])
    outcome = finetune_with(view, x, lambda outputs, index: outputs[0].square().mean(), lambda v: next(scores), 0.9,
                            config)
    assert outcome.curve == [(0, 0.95), (5, 0.96)] and outcome.met and outcome.floor == 0.93
    stuck = finetune_with(view, x, lambda outputs, index: outputs[0].square().mean(),
                          lambda v: Scored(0.95, 0.85), 0.9, config)
    assert [step for step, _ in stuck.curve] == [0, 5, 10] and not stuck.met and stuck.floor == 0.85


def test_the_abandon_rule_with_projection_stops_a_candidate_its_budget_cannot_take_to_the_bound() -> None:
    """Rising, but at a gain per evaluation that the evaluations left cannot turn into the bound
    (0.80, 0.84, 0.85, 0.855: best 0.855 + 0.0075 x 6 left < 0.98): stopped at its third
    evaluation. A curve that could still get there, or the rule without projection, goes on."""
    view = _conv_bn_classifier()
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((32, 2, 6, 6)).astype(np.float32))
    config = FinetuneConfig(steps=45, batch=8, lr=0.01, weight_decay=0.0, eval_every=5, seed=0, autocast=False,
                            patience=3, projection=True)

    def scripted(values):
        scores = iter(values)
        return lambda view: Scored.exact(next(scores))

    def run(values, config):
        return finetune_with(view, x, lambda outputs, index: outputs[0].square().mean(), scripted(values), 0.98,
                             config)

    slow = [0.80, 0.84, 0.85, 0.855, 0.86, 0.865, 0.87, 0.875, 0.88, 0.885]
    assert [step for step, _ in run(slow, config).curve] == [0, 5, 10, 15]
    fast = [0.80, 0.86, 0.92, 0.96, 0.99]
    reached = run(fast, config)
    assert [step for step, _ in reached.curve] == [0, 5, 10, 15, 20] and reached.met
    plain = run(slow, dataclasses.replace(config, projection=False))
    assert [step for step, _ in plain.curve][-1] == 45 and not plain.met
    off = run(slow, dataclasses.replace(config, patience=0))
    assert [step for step, _ in off.curve][-1] == 45
    assert not out_of_reach([(0, 0.5), (5, 0.9)], 0.99, 1)  # two points: no recent gain to project yet
    assert out_of_reach([(0, 0.9), (5, 0.95), (10, 0.94)], 0.99, 2)  # falling: the best so far is all it gets
    assert not out_of_reach([(0, 0.9), (5, 0.95), (10, 0.94)], 0.95, 2)
