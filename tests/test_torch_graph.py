"""Invariant 4: the torch view of a graph computes what ONNX Runtime computes, before and after
a training step written back into the initializers; BatchNorm trains as batch norm."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from models.builders import BUILDERS, build, example_input
from models.export import EXPORTERS, cached_export
from models.ocr import ocr_model
from models.zoo import ZOO_NAMES, load_zoo
from onnxwootz.core.errors import BadSpecError, DeviceError, UnsupportedOpError
from onnxwootz.core.modelio import upgrade_opset
from onnxwootz.prepared import PreparedModel, prepare
from onnxwootz.runtime import TorchGraph
from onnxwootz.runtime.devices import autocast_context, native_bf16, prepare_module, resolve_device
from onnxwootz.runtime.sessions import cpu_session
from onnxwootz.runtime.torch_graph import named_onnx_parameters

RTOL, ATOL = 1e-4, 1e-5


def _ort(model: onnx.ModelProto, *inputs: np.ndarray) -> list[np.ndarray]:
    session = cpu_session(model)
    names = [value.name for value in session.get_inputs()]
    return session.run(None, dict(zip(names, inputs)))


def _view(view: TorchGraph, *inputs: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        out = view(*(torch.from_numpy(x) for x in inputs))
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def _assert_same(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    """rtol/atol on outputs in units of their largest magnitude (when above 1): float32 sums
    of random-weight logits in the thousands carry absolute rounding noise of that scale, which
    an element that happens to cancel to near zero cannot meet in absolute terms."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        scale = max(1.0, float(np.abs(w).max()))
        np.testing.assert_allclose(g / scale, w / scale, rtol=RTOL, atol=ATOL)


def _zoo(name: str, upgraded: bool) -> onnx.ModelProto:
    """A zoo graph (opset 13 as the project's loader gives it, or as shipped) whose saturated
    final Softmax has its input exposed as an extra output."""
    model = load_zoo(name)
    if upgraded:
        model = upgrade_opset(model, 13)
    last = model.graph.node[-1]
    if last.op_type == "Softmax":
        model.graph.output.append(helper.make_tensor_value_info(last.input[0], TensorProto.FLOAT, [None, None]))
    return model


def _sgd_step(view: TorchGraph, x: np.ndarray, relative: float) -> None:
    """One SGD step on a fixed random direction of the last output, scaled so that the weights
    move by `relative` of their norm (random-weight graphs differ wildly in gradient scale)."""
    view.zero_grad()
    out = view(torch.from_numpy(x))
    last = out[-1] if isinstance(out, tuple) else out
    direction = torch.randn(last.shape, generator=torch.Generator().manual_seed(1))
    (last * direction).sum().backward()
    params = [p for p in view.parameters() if p.grad is not None]
    assert params, "no parameter received a gradient"
    grad_norm = torch.sqrt(sum((p.grad ** 2).sum() for p in params))
    weight_norm = torch.sqrt(sum((p.detach() ** 2).sum() for p in params))
    torch.optim.SGD(params, lr=float(relative * weight_norm / grad_norm)).step()


def _check_step_written_back(model: onnx.ModelProto, view: TorchGraph, x: np.ndarray, before: list[np.ndarray]) -> None:
    _sgd_step(view, x, relative=0.02)
    written = view.to_onnx()
    onnx.checker.check_model(written)
    assert [i.name for i in written.graph.initializer] == [i.name for i in model.graph.initializer]
    after = _ort(written, x)
    _assert_same(_view(view, x), after)
    moved = np.abs(after[-1] - before[-1]).max()
    assert moved > 1e-2 * np.abs(before[-1]).max(), f"the step barely moved the output ({moved})"


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_view_matches_ort_before_and_after_a_step(name: str) -> None:
    model = _zoo(name, upgraded=True)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    view = TorchGraph(model).eval()
    before = _ort(model, x)
    _assert_same(_view(view, x), before)
    _check_step_written_back(model, view, x, before)


@pytest.mark.parametrize("name", ["squeezenet", "shufflenet", "inception_v2"])
def test_zoo_view_of_raw_opset9_graph(name: str) -> None:
    """Opset-9 forms as shipped (Unsqueeze/Reshape/Dropout attributes, 2-D-coercing Softmax);
    the three smallest graphs that together use them all."""
    model = _zoo(name, upgraded=False)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    _assert_same(_view(TorchGraph(model).eval(), x), _ort(model, x))


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", list(BUILDERS))
def test_exported_builder_view(name: str, exporter: str) -> None:
    model = cached_export(name, exporter)
    view = TorchGraph(model).eval()
    x = example_input(batch=2).numpy()  # exported at another batch size: the batch axis is dynamic
    before = _ort(model, x)
    _assert_same(_view(view, x), before)
    with torch.no_grad():
        np.testing.assert_allclose(before[0], build(name)(torch.from_numpy(x)).numpy(), rtol=1e-3, atol=1e-4)
    _check_step_written_back(model, view, x, before)


# ---- hand-made graphs


def _model(nodes: list[onnx.NodeProto], inputs: dict[str, list], outputs: list[str],
           inits: dict[str, np.ndarray] | None = None, opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_empty_tensor_value_info(n) for n in outputs],
        [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _check(model: onnx.ModelProto, *shapes: list[int]) -> None:
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    _assert_same(_view(TorchGraph(model).eval(), *xs), _ort(model, *xs))


def _w(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _i(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


N = helper.make_node
X4 = {"x": ["N", 4, 9, 9]}

SINGLE_NODE_CASES = {
    "conv_groups_asym_pads": ([N("Conv", ["x", "w", "b"], ["y"], group=2, pads=[0, 1, 2, 1], strides=[2, 1])], {"w": _w(6, 2, 3, 3), "b": _w(6)}),
    "conv_same_upper": ([N("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])], {"w": _w(5, 4, 3, 2)}),
    "conv_same_lower": ([N("Conv", ["x", "w"], ["y"], auto_pad="SAME_LOWER", strides=[2, 2])], {"w": _w(5, 4, 4, 4)}),
    "conv_valid": ([N("Conv", ["x", "w"], ["y"], auto_pad="VALID", strides=[3, 3])], {"w": _w(5, 4, 2, 2)}),
    "conv_transpose": ([N("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2], pads=[1, 0, 0, 1], output_padding=[1, 1], group=2)], {"w": _w(4, 3, 3, 3), "b": _w(6)}),
    "conv_transpose_output_shape": ([N("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], output_shape=[18, 19])], {"w": _w(4, 3, 3, 3)}),
    "maxpool_ceil_pads": ([N("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)], {}),
    "maxpool_asym": ([N("MaxPool", ["x"], ["y"], kernel_shape=[2, 3], strides=[2, 2], pads=[0, 1, 1, 0])], {}),
    "maxpool_same_upper": ([N("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")], {}),
    "avgpool_exclude_pad": ([N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])], {}),
    "avgpool_include_pad": ([N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1)], {}),
    "avgpool_asym": ([N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1])], {}),
    "global_pools": ([N("GlobalAveragePool", ["x"], ["a"]), N("GlobalMaxPool", ["x"], ["b"]), N("Add", ["a", "b"], ["y"])], {}),
    "lrn_odd": ([N("LRN", ["x"], ["y"], size=3)], {}),
    "instance_norm": ([N("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=1e-3)], {"s": _w(4), "b": _w(4)}),
    "batch_norm_eval": ([N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])], {"s": _w(4), "b": _w(4), "m": _w(4), "v": np.abs(_w(4)) + 0.5}),
    "activations": ([
        N("LeakyRelu", ["x"], ["a"], alpha=0.2), N("PRelu", ["a", "slope"], ["b"]), N("HardSigmoid", ["b"], ["c"], alpha=0.3),
        N("HardSwish", ["x"], ["d"]), N("Elu", ["d"], ["e"], alpha=0.7), N("Selu", ["e"], ["f"]), N("Softplus", ["f"], ["g"]),
        N("Tanh", ["g"], ["i"]), N("Sigmoid", ["i"], ["j"]), N("Erf", ["j"], ["k"]), N("Exp", ["k"], ["l"]),
        N("Abs", ["x"], ["m"]), N("Log", ["m"], ["n"]), N("Floor", ["n"], ["o"]), N("Ceil", ["l"], ["p"]),
        N("Sum", ["c", "l", "o", "p"], ["y"]),
    ], {"slope": _w(4, 1, 1)}),
    "arith": ([
        N("Mul", ["x", "x"], ["sq"]), N("Sqrt", ["sq"], ["r"]), N("Reciprocal", ["r"], ["q"]),
        N("Neg", ["q"], ["n"]), N("Sub", ["n", "x"], ["s"]), N("Div", ["s", "two"], ["d"]), N("Pow", ["d", "two"], ["p"]),
        N("Sum", ["p", "d", "x"], ["t"]), N("Max", ["t", "x"], ["u"]), N("Min", ["u", "n", "s"], ["y"]),
    ], {"two": np.array(2.0, dtype=np.float32)}),
    "clip_inputs": ([N("Clip", ["x", "lo", "hi"], ["y"])], {"lo": np.array(-0.5, np.float32), "hi": np.array(0.7, np.float32)}),
    "reduce_attr_axes": ([N("ReduceMean", ["x"], ["a"], axes=[2, 3]), N("ReduceMax", ["x"], ["b"], axes=[-1], keepdims=1),
                          N("Add", ["a", "b"], ["y"])], {}),
    "softmax_axis1": ([N("Softmax", ["x"], ["a"], axis=1), N("LogSoftmax", ["x"], ["b"], axis=-2), N("Add", ["a", "b"], ["y"])], {}),
    "resize_nearest_scales": ([N("Resize", ["x", "", "sc"], ["y"], mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")], {"sc": np.array([1, 1, 2, 2], np.float32)}),
    "resize_nearest_exact": ([N("Resize", ["x", "", "sc"], ["y"], mode="nearest", nearest_mode="round_prefer_ceil")], {"sc": np.array([1, 1, 1.5, 1.5], np.float32)}),
    "resize_linear_sizes": ([N("Resize", ["x", "", "", "sz"], ["y"], mode="linear")], {"sz": _i(3, 4, 13, 5)}),
    "resize_linear_align": ([N("Resize", ["x", "", "sc"], ["y"], mode="linear", coordinate_transformation_mode="align_corners")], {"sc": np.array([1, 1, 2, 2], np.float32)}),
    "pad_modes": ([N("Pad", ["x", "p", "v"], ["a"], mode="constant"), N("Pad", ["x", "p"], ["b"], mode="reflect"),
                   N("Pad", ["x", "p"], ["c"], mode="edge"), N("Concat", ["a", "b", "c"], ["y"], axis=1)],
                  {"p": _i(0, 0, 1, 2, 0, 0, 2, 1), "v": np.array(0.5, np.float32)}),
    "split_slice": ([N("Split", ["x", "sp"], ["a", "b"], axis=1), N("Slice", ["a", "st", "en", "ax", "step"], ["c"]),
                     N("Split", ["b"], ["d", "e"], axis=2, num_outputs=2), N("ReduceSum", ["c", "rax"], ["f"], keepdims=1),
                     N("Mul", ["d", "e2"], ["g"]), N("Mul", ["g", "f"], ["y"])],
                    {"sp": _i(1, 3), "st": _i(1, -6), "en": _i(9, 99), "ax": _i(2, 3), "step": _i(2, 3), "rax": _i(2, 3),
                     "e2": _w(1, 3, 1, 9)}),
    "squeeze_unsqueeze_transpose": ([N("ReduceMean", ["x"], ["a"], axes=[1]), N("Squeeze", ["a", "one"], ["b"]),
                                     N("Unsqueeze", ["b", "ax"], ["c"]), N("Transpose", ["c"], ["y"], perm=[3, 0, 2, 1, 4])],
                                    {"one": _i(1), "ax": _i(0, -1)}),
    "gemm_trans": ([N("Flatten", ["x"], ["f"], axis=2), N("Gemm", ["f", "w", "c"], ["y"], transA=1, transB=0, alpha=0.5, beta=2.0)], {"w": _w(12, 5), "c": _w(5)}),
    "matmul_expand_where": ([N("MatMul", ["x", "w"], ["m"]), N("Expand", ["bias", "shp"], ["e"]), N("Add", ["m", "e"], ["s"]),
                             N("Equal", ["ids", "ids2"], ["eq"]), N("Where", ["eq", "s", "m"], ["y"])],
                            {"w": _w(9, 6), "bias": _w(1, 6), "shp": _i(4, 1, 6), "ids": _i(1, 2, 3, 4, 5, 6),
                             "ids2": _i(1, 0, 3, 0, 5, 0)}),
    "reduce_input_axes": ([N("ReduceMean", ["x", "ax"], ["a"]), N("ReduceMax", ["x", "ax"], ["b"]), N("Add", ["a", "b"], ["y"])],
                          {"ax": _i(1, -1)}),
    "constants_casts_range": ([
        N("Constant", [], ["c"], value_float=0.5), N("Identity", ["x"], ["i"]), N("Dropout", ["i", "ratio"], ["d"]),
        N("Mul", ["d", "c"], ["m"]), N("Cast", ["m"], ["md"], to=TensorProto.DOUBLE), N("Cast", ["md"], ["mf"], to=TensorProto.FLOAT),
        N("Range", ["r0", "r9", "r1"], ["r"]), N("Cast", ["r"], ["rf"], to=TensorProto.FLOAT), N("Add", ["mf", "rf"], ["y"]),
    ], {"ratio": np.array(0.3, np.float32), "r0": np.array(0, np.int64), "r9": np.array(9, np.int64), "r1": np.array(1, np.int64)}),
    "more_activations": ([
        N("Mish", ["x"], ["a"]), N("Celu", ["a"], ["b"], alpha=0.8), N("Sin", ["b"], ["c"]), N("Cos", ["x"], ["d"]),
        N("Mul", ["x", "three"], ["x3"]), N("Round", ["x3"], ["e"]), N("Softsign", ["e"], ["f"]),
        N("ThresholdedRelu", ["x"], ["g"], alpha=0.3), N("Mean", ["c", "d", "f", "g"], ["y"]),
    ], {"three": np.array(3.0, np.float32)}),
    "lp_pools": ([N("LpPool", ["x"], ["a"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], p=2),
                  N("LpPool", ["x"], ["b"], kernel_shape=[2, 3], strides=[2, 2], pads=[0, 1, 1, 1], p=1),
                  N("GlobalLpPool", ["x"], ["c"], p=3), N("Add", ["a", "b"], ["ab"]), N("Add", ["ab", "c"], ["y"])], {}),
    "more_reductions": ([N("ReduceMin", ["x", "ax"], ["a"]), N("ReduceL1", ["x", "ax"], ["b"]), N("ReduceL2", ["x", "ax"], ["c"]),
                         N("ReduceProd", ["x", "last"], ["d"], keepdims=1), N("ReduceL2", ["x"], ["e"], keepdims=0),
                         N("Size", ["x"], ["n"]), N("Cast", ["n"], ["nf"], to=TensorProto.FLOAT),
                         N("Sum", ["a", "b", "c", "d", "e", "nf"], ["y"])],
                        {"ax": _i(2, 3), "last": _i(-1)}),
}


ATTRIBUTE_AXES = {"reduce_attr_axes", "squeeze_unsqueeze_transpose"}
"""Cases written with opset < 18 attribute forms; the rest run at opset 18 (Split num_outputs)."""


@pytest.mark.parametrize("case", list(SINGLE_NODE_CASES))
def test_single_ops_match_ort(case: str) -> None:
    nodes, inits = SINGLE_NODE_CASES[case]
    _check(_model(nodes, X4, ["y"], inits, opset=17 if case in ATTRIBUTE_AXES else 18), [3, 4, 9, 9])


def test_ops_beyond_onnxruntime_match_the_reference() -> None:
    """LRN with an even size (ONNX Runtime refuses it) and Gelu (opset 20) against onnx.reference."""
    from onnx.reference import ReferenceEvaluator

    nodes = [N("LRN", ["x"], ["a"], size=4, alpha=0.01, beta=0.6, bias=1.5), N("Gelu", ["a"], ["b"]),
             N("Gelu", ["x"], ["c"], approximate="tanh"), N("Add", ["b", "c"], ["y"])]
    model = _model(nodes, X4, ["y"], opset=20)
    # batch >= channels: onnx.reference's LRN loops over range(batch) where it means channels
    x = np.random.default_rng(0).standard_normal((4, 4, 9, 9)).astype(np.float32)
    _assert_same(_view(TorchGraph(model).eval(), x), ReferenceEvaluator(model).run(None, {"x": x}))


def test_legacy_opset_forms() -> None:
    """Opset 9-10 forms: Clip/Pad attributes, Upsample with a scales input, Slice attributes,
    Softmax coercing to 2-D."""
    nodes = [N("Clip", ["x"], ["a"], min=-0.3, max=0.4), N("Pad", ["a"], ["b"], pads=[0, 0, 1, 0, 0, 0, 0, 1]),
             N("Upsample", ["b", "sc"], ["c"], mode="nearest"), N("Slice", ["c"], ["d"], starts=[1], ends=[15], axes=[2]),
             N("Softmax", ["d"], ["y"], axis=1)]
    _check(_model(nodes, X4, ["y"], {"sc": np.array([1, 1, 2, 2], np.float32)}, opset=9), [2, 4, 9, 9])


def test_shape_arithmetic_keeps_batch_dynamic() -> None:
    """The legacy exporter's `x.view(x.size(0), -1)` chain: Shape/Gather/Unsqueeze/Concat/Reshape."""
    nodes = [N("Shape", ["x"], ["s"]), N("Gather", ["s", "zero"], ["b"], axis=0), N("Unsqueeze", ["b", "zax"], ["bu"]),
             N("Slice", ["s", "one", "two"], ["c"]),
             N("Concat", ["bu", "c", "minus"], ["shape"], axis=0), N("Reshape", ["x", "shape"], ["r"]),
             N("Concat", ["bu", "c", "one"], ["oshape"], axis=0),
             N("ConstantOfShape", ["oshape"], ["ones"], value=numpy_helper.from_array(np.array([1.0], np.float32))),
             N("Mul", ["r", "ones"], ["y"])]
    inits = {"zero": np.array(0, np.int64), "zax": _i(0), "one": _i(1), "two": _i(2), "minus": _i(-1)}
    model = _model(nodes, X4, ["y"], inits)
    view = TorchGraph(model).eval()
    assert "size(0)" in view.code and "int_tensor" not in view.code
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 4, 9, 9)).astype(np.float32)
        _assert_same(_view(view, x), _ort(model, x))


def _bn_model(momentum: float) -> onnx.ModelProto:
    nodes = [N("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             N("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["bn"], momentum=momentum, epsilon=1e-5),
             N("Relu", ["bn"], ["y"])]
    inits = {"w": _w(6, 4, 3, 3), "scale": _w(6, seed=1), "bias": _w(6, seed=2), "mean": _w(6, seed=3) * 0.1,
             "var": np.abs(_w(6, seed=4)) + 0.5}
    return _model(nodes, X4, ["y"], inits)


def test_batch_norm_trains_and_writes_running_stats_back() -> None:
    model = _bn_model(momentum=0.8)
    view = TorchGraph(model)
    assert set(view.param_names) == {"w", "scale", "bias", "mean", "var"}
    assert {n for n, _ in view.named_buffers()} >= {"mean", "var"}
    assert {n for n, _ in view.named_parameters()} == {"w", "scale", "bias"}
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((8, 4, 9, 9)).astype(np.float32))
    conv = torch.nn.functional.conv2d(x, torch.from_numpy(_w(6, 4, 3, 3)), padding=1)
    batch_mean = conv.mean(dim=(0, 2, 3))
    batch_var = conv.var(dim=(0, 2, 3), unbiased=True)
    old_mean, old_var = view.mean.clone(), view.var.clone()
    view.train()
    train_out = view(x)
    torch.testing.assert_close(view.mean, 0.8 * old_mean + 0.2 * batch_mean)
    torch.testing.assert_close(view.var, 0.8 * old_var + 0.2 * batch_var)
    normalized = (conv - batch_mean[None, :, None, None]) / torch.sqrt(conv.var(dim=(0, 2, 3), unbiased=False) + 1e-5)[None, :, None, None]
    expected = torch.relu(normalized * view.scale[None, :, None, None] + view.bias[None, :, None, None])
    torch.testing.assert_close(train_out, expected, rtol=1e-4, atol=1e-5)
    written = view.to_onnx()
    stats = {i.name: numpy_helper.to_array(i) for i in written.graph.initializer}
    np.testing.assert_allclose(stats["mean"], view.mean.numpy())
    np.testing.assert_allclose(stats["var"], view.var.numpy())
    assert not np.allclose(stats["mean"], old_mean.numpy())
    view.eval()
    _assert_same(_view(view, x.numpy()), _ort(written, x.numpy()))


def test_batch_norm_stats_tied_to_weights_through_identity() -> None:
    """The legacy exporter merges equal-valued initializers (fresh BatchNorm: weight == var == 1)
    and re-shares them through Identity nodes: a stat that is also a weight stays a parameter,
    runs, and is never updated as a running stat; a stat used only as stats is a buffer."""
    nodes = [N("Identity", ["ones"], ["bn.weight"]), N("Identity", ["ones"], ["bn.running_var"]),
             N("Identity", ["zeros"], ["bn.running_mean"]),
             N("BatchNormalization", ["x", "bn.weight", "beta", "bn.running_mean", "bn.running_var"], ["y"])]
    inits = {"ones": np.ones(4, np.float32), "zeros": np.zeros(4, np.float32), "beta": _w(4)}
    model = _model(nodes, X4, ["y"], inits)
    view = TorchGraph(model)
    assert {n for n, _ in view.named_parameters()} == {"ones", "beta"}
    assert {n for n, _ in view.named_buffers() if not n.startswith("_")} == {"zeros"}
    x = np.random.default_rng(0).standard_normal((3, 4, 9, 9)).astype(np.float32)
    _assert_same(_view(view.eval(), x), _ort(model, x))
    view.train()
    view(torch.from_numpy(x)).sum().backward()
    assert torch.equal(view.ones.detach(), torch.ones(4)) and view.ones.grad is not None


def test_shared_initializer_is_one_parameter_and_names_are_sanitized() -> None:
    nodes = [N("Conv", ["x", "conv.w/0"], ["a"], pads=[1, 1, 1, 1]), N("Relu", ["a"], ["b"]),
             N("Conv", ["b", "conv.w/0"], ["c"], pads=[1, 1, 1, 1]), N("Add", ["c", "9bias"], ["y"])]
    model = _model(nodes, X4, ["y"], {"conv.w/0": _w(4, 4, 3, 3), "9bias": _w(4, 1, 1)})
    view = TorchGraph(model)
    assert view.param_names == {"conv.w/0": "conv_w_0", "9bias": "t_9bias"}
    assert view.onnx_names == {"conv_w_0": "conv.w/0", "t_9bias": "9bias"}
    assert len(list(view.parameters())) == 2
    assert [name for name, _ in named_onnx_parameters(view)] == ["conv.w/0", "9bias"]
    copied = copy.deepcopy(view)
    with torch.no_grad():
        copied.conv_w_0.add_(1.0)
    assert copied.param_names == view.param_names
    assert not torch.equal(copied.conv_w_0, view.conv_w_0)
    written = copied.to_onnx()
    np.testing.assert_array_equal(numpy_helper.to_array(written.graph.initializer[0]), copied.conv_w_0.detach().numpy())


def test_unsupported_op_is_one_line_at_construction() -> None:
    model = _model([N("Relu", ["x"], ["a"]), N("TopK", ["a", "k"], ["y", "idx"], name="pick")], X4, ["y"], {"k": _i(2)})
    with pytest.raises(UnsupportedOpError) as info:
        TorchGraph(model)
    message = str(info.value)
    assert "TopK" in message and "pick" in message and "\n" not in message


def test_dynamic_shape_input_that_must_be_constant_is_unsupported() -> None:
    model = _model([N("Resize", ["x", "", "sc"], ["y"], name="up")], {"x": ["N", 4, 9, 9], "sc": [4]}, ["y"])
    with pytest.raises(UnsupportedOpError, match="Resize.*up"):
        TorchGraph(model)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(DeviceError, match="cuda"):
            resolve_device("cuda")
    with pytest.raises(BadSpecError):
        resolve_device("tpu")
    cpu = torch.device("cpu")
    with autocast_context(cpu, enabled=True):
        assert torch.is_autocast_enabled("cpu") == native_bf16(cpu)
    with autocast_context(cpu, enabled=False):
        assert not torch.is_autocast_enabled("cpu")


def test_prepare_module_lays_4d_tensors_out_channels_last_and_leaves_others() -> None:
    torch.manual_seed(0)
    module = torch.nn.ModuleDict({"conv2d": torch.nn.Conv2d(3, 4, 3), "conv3d": torch.nn.Conv3d(2, 3, 3)})
    x2, x3 = torch.randn(2, 3, 8, 8), torch.randn(1, 2, 5, 5, 5)
    with torch.no_grad():
        before = module["conv2d"](x2), module["conv3d"](x3)
        prepare_module(module, torch.device("cpu"))
        assert module["conv2d"].weight.is_contiguous(memory_format=torch.channels_last)
        assert module["conv3d"].weight.dim() == 5 and module["conv3d"].weight.is_contiguous()
        torch.testing.assert_close(module["conv2d"](x2), before[0])
        torch.testing.assert_close(module["conv3d"](x3), before[1])


def test_every_op_the_analysis_accepts_runs_in_the_torch_view() -> None:
    """The channel rules and the torch view agree on which ops exist: an op the analysis would
    prune through is one the explorer can also train."""
    from onnxwootz.passes.ops import DOMAIN_RULES, RULES
    from onnxwootz.runtime.torch_ops import DOMAIN_OPS, OPS

    assert sorted(set(RULES) - set(OPS)) == []
    assert sorted(set(DOMAIN_RULES) - set(DOMAIN_OPS)) == []



@pytest.fixture(scope="module")
def paddle_rec() -> PreparedModel:
    return prepare(ocr_model("rec"), [1, 3, 48, 320])


def test_paddleocr_rec_view_matches_ort_at_other_batches_and_widths(paddle_rec) -> None:
    """PP-OCRv4 rec reshapes to targets computed at run time, where symbolic inference loses the
    rank: the example shape supplies it, yet the view is not tied to that batch or width."""
    with pytest.raises(UnsupportedOpError, match="rank unknown"):
        TorchGraph(paddle_rec.model)  # dynamic H and W declared, no example: the rank stays unknown
    view = TorchGraph(paddle_rec.model, paddle_rec.feed_shapes).eval()
    rng = np.random.default_rng(0)
    for batch, width in [(1, 320), (3, 320), (2, 160)]:
        x = rng.standard_normal((batch, 3, 48, width)).astype(np.float32)
        _assert_same(_view(view, x), _ort(paddle_rec.model, x))
    view.train()
    view(torch.from_numpy(rng.standard_normal((2, 3, 48, 160)).astype(np.float32))).square().mean().backward()
    grads = {name: p.grad for name, p in named_onnx_parameters(view)}
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads.values())
    assert sum(float(g.abs().sum()) for g in grads.values()) > 0


@pytest.mark.parametrize("kind", ["det", "rec"])
def test_to_onnx_keeps_every_initializer_dims_and_dtype_on_paddleocr(kind: str) -> None:
    """PP-OCRv4's 0-d float constants are parameters of the view and come back 0-d."""
    prepared = prepare(ocr_model(kind), [1, 3, 64, 64] if kind == "det" else [1, 3, 48, 320])
    view = TorchGraph(prepared.model, prepared.feed_shapes)
    scalars = [name for name in view.param_names
               if not next(i for i in prepared.model.graph.initializer if i.name == name).dims]
    assert scalars, "the model has no 0-d trainable initializer: the test would test nothing"
    written = view.to_onnx()
    assert [(i.name, list(i.dims), i.data_type) for i in written.graph.initializer] == \
        [(i.name, list(i.dims), i.data_type) for i in prepared.model.graph.initializer]
    onnx.checker.check_model(written)
