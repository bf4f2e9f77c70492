"""FoldBatchNorm and export_options: folded models compute what the originals compute (ONNX
Runtime), on the model-zoo graphs with BatchNorm and on hand-made Conv/ConvTranspose/Gemm + BN
graphs; BNs that must stay do stay; opset conversion works or fails with one line."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.zoo import load_zoo
from onnxwootz.core.errors import BadSpecError
from onnxwootz.core.modelio import upgrade_opset
from onnxwootz.core.onnx_helpers import dummy_feed, input_shapes, onnx_opset
from onnxwootz.passes.base import PassError, check_model
from onnxwootz.passes.canonicalize import canonicalize
from onnxwootz.passes.export import export_options
from onnxwootz.passes.fold_bn import FoldBatchNorm
from onnxwootz.passes.graph_index import GraphIndex
from onnxwootz.runtime.sessions import cpu_session

RTOL, ATOL = 1e-4, 1e-5


def _bn_count(model: onnx.ModelProto) -> int:
    return sum(node.op_type == "BatchNormalization" for node in model.graph.node)


def _foldable_by_structure(model: onnx.ModelProto) -> int:
    """BNs right after a Conv/ConvTranspose/Gemm whose output nothing else reads."""
    index = GraphIndex(model)
    count = 0
    for node in model.graph.node:
        if node.op_type != "BatchNormalization":
            continue
        producer = index.producer.get(node.input[0])
        if producer is not None and producer.op_type in {"Conv", "ConvTranspose", "Gemm"}:
            count += len(index.consumers[node.input[0]]) == 1
    return count


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = cpu_session(model)
    names = [out.name for out in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


def _assert_same_outputs(before: onnx.ModelProto, after: onnx.ModelProto, feed: dict[str, np.ndarray]) -> None:
    expected, got = _run(before, feed), _run(after, feed)
    assert list(got) == list(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=RTOL, atol=ATOL, err_msg=name)


def _assert_close_at_scale(got: np.ndarray, expected: np.ndarray, name: str) -> None:
    """rtol/atol on tensors divided by their largest magnitude (when above 1): the random-weight
    zoo nets reach logits of 1e5-1e6, where an entry near zero is a difference of huge float32
    sums and carries ~1e-7 of the tensor's scale as rounding noise whichever weights ran."""
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got / scale, expected / scale, rtol=RTOL, atol=ATOL, err_msg=name)


def _expose_pre_softmax(model: onnx.ModelProto) -> onnx.ModelProto:
    """The zoo classifiers end in a saturated Softmax: compare the logits instead."""
    last = model.graph.node[-1]
    if last.op_type == "Softmax":
        probabilities = next(out for out in model.graph.output if out.name == last.output[0])
        model.graph.output.append(helper.make_value_info(last.input[0], probabilities.type))
    return model


@pytest.fixture(scope="module", params=["resnet50", "inception_v2", "densenet121", "shufflenet"])
def zoo_model(request) -> onnx.ModelProto:
    return _expose_pre_softmax(canonicalize(upgrade_opset(load_zoo(request.param), 13)))


def test_zoo_folding_keeps_outputs(zoo_model: onnx.ModelProto) -> None:
    original = onnx.ModelProto()
    original.CopyFrom(zoo_model)
    expected_folds = _foldable_by_structure(original)
    assert expected_folds > 0

    result = FoldBatchNorm()(zoo_model)

    assert result.modified
    folded = result.model
    assert _bn_count(original) - _bn_count(folded) == expected_folds
    assert _foldable_by_structure(folded) == 0
    check_model(folded)
    assert [o.name for o in folded.graph.output] == [o.name for o in original.graph.output]
    feed = dummy_feed(original, input_shapes(original))
    expected = _run(original, feed)
    got = _run(folded, feed)
    softmax_outputs = {original.graph.node[-1].output[0]} if original.graph.node[-1].op_type == "Softmax" else set()
    for name, value in expected.items():
        if name not in softmax_outputs:
            _assert_close_at_scale(got[name], value, name)


# ---- hand-made graphs -------------------------------------------------------------------

def _bn_params(prefix: str, channels: int, rng: np.random.Generator) -> list[onnx.TensorProto]:
    values = {
        "scale": rng.uniform(0.5, 1.5, channels), "bias": rng.normal(0, 0.5, channels),
        "mean": rng.normal(0, 0.5, channels), "var": rng.uniform(0.2, 2.0, channels),
    }
    return [numpy_helper.from_array(v.astype(np.float32), f"{prefix}_{k}") for k, v in values.items()]


def _bn(prefix: str, x: str, y: str, **attrs) -> onnx.NodeProto:
    names = [f"{prefix}_{k}" for k in ("scale", "bias", "mean", "var")]
    return helper.make_node("BatchNormalization", [x, *names], [y], name=prefix, epsilon=1e-3, **attrs)


def _weight(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> onnx.TensorProto:
    return numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name)


def _model(nodes, inits, inputs, outputs, opset: int = 13) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _conv_model(rng: np.random.Generator) -> onnx.ModelProto:
    """Conv with bias -> BN -> Relu -> grouped Conv without bias -> BN -> ConvTranspose (groups 2)
    -> BN -> BN (a chain: folds twice)."""
    nodes = [
        helper.make_node("Conv", ["x", "c1_w", "c1_b"], ["c1"], name="c1", pads=[1, 1, 1, 1]),
        _bn("bn1", "c1", "b1"),
        helper.make_node("Relu", ["b1"], ["r1"], name="r1"),
        helper.make_node("Conv", ["r1", "c2_w"], ["c2"], name="c2", group=2),
        _bn("bn2", "c2", "b2"),
        helper.make_node("ConvTranspose", ["b2", "t_w"], ["t"], name="t", group=2, strides=[2, 2]),
        _bn("bn3", "t", "b3"),
        _bn("bn4", "b3", "y"),
    ]
    inits = [_weight("c1_w", (8, 3, 3, 3), rng), _weight("c1_b", (8,), rng), _weight("c2_w", (4, 4, 1, 1), rng),
             _weight("t_w", (4, 3, 3, 3), rng)]
    inits += _bn_params("bn1", 8, rng) + _bn_params("bn2", 4, rng) + _bn_params("bn3", 6, rng)
    inits += _bn_params("bn4", 6, rng)
    return _model(nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 6, 17, 17])])


def _gemm_model(rng: np.random.Generator) -> onnx.ModelProto:
    """Gemm (transB, bias, alpha, beta) -> BN, and Gemm (no bias) -> BN."""
    nodes = [
        helper.make_node("Gemm", ["x", "g1_w", "g1_b"], ["g1"], name="g1", transB=1, alpha=0.7, beta=1.3),
        _bn("bn1", "g1", "b1"),
        helper.make_node("Gemm", ["b1", "g2_w"], ["g2"], name="g2"),
        _bn("bn2", "g2", "y"),
    ]
    inits = [_weight("g1_w", (6, 5), rng), _weight("g1_b", (6,), rng), _weight("g2_w", (6, 4), rng)]
    inits += _bn_params("bn1", 6, rng) + _bn_params("bn2", 4, rng)
    return _model(nodes, inits, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])])


@pytest.mark.parametrize("build, folds", [(_conv_model, 4), (_gemm_model, 2)])
def test_hand_made_folding(build, folds: int) -> None:
    original = build(np.random.default_rng(1))
    model = onnx.ModelProto()
    model.CopyFrom(original)
    weights_before = {init.name for init in original.graph.initializer if not init.name.startswith("bn")}

    result = FoldBatchNorm()(model)

    assert result.modified
    assert _bn_count(original) - _bn_count(result.model) == folds == _bn_count(original)
    check_model(result.model)
    names = {init.name for init in result.model.graph.initializer}
    assert weights_before <= names  # folded weights keep their names
    assert not any(name.startswith("bn") for name in names)  # dead BN parameters are gone
    assert [o.name for o in result.model.graph.output] == ["y"]
    _assert_same_outputs(original, result.model, dummy_feed(original, input_shapes(original)))


def test_added_bias_is_named_after_the_weight() -> None:
    model = _conv_model(np.random.default_rng(2))
    folded = FoldBatchNorm()(model).model
    conv = next(node for node in folded.graph.node if node.name == "c2")
    assert list(conv.input) == ["r1", "c2_w", "c2_w_bias"]
    assert numpy_helper.to_array(next(i for i in folded.graph.initializer if i.name == "c2_w_bias")).shape == (4,)


def test_bn_after_conv_with_two_consumers_is_not_folded() -> None:
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Conv", ["x", "c_w"], ["c"], name="c"),
        _bn("bn", "c", "b"),
        helper.make_node("Relu", ["c"], ["r"], name="r"),
        helper.make_node("Add", ["b", "r"], ["y"], name="add"),
    ]
    original = _model(nodes, [_weight("c_w", (4, 3, 1, 1), rng), *_bn_params("bn", 4, rng)],
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])])
    model = onnx.ModelProto()
    model.CopyFrom(original)

    result = FoldBatchNorm()(model)

    assert not result.modified
    assert result.model == original


def test_training_mode_bn_is_refused() -> None:
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Conv", ["x", "c_w"], ["c"], name="c"),
             _bn("bn", "c", "y", training_mode=1)]
    model = _model(nodes, [_weight("c_w", (4, 3, 1, 1), rng), *_bn_params("bn", 4, rng)],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])], opset=15)
    with pytest.raises(PassError, match="training mode"):
        FoldBatchNorm()(model)


# ---- export_options ---------------------------------------------------------------------

def test_export_folds_and_converts_opset() -> None:
    original = _expose_pre_softmax(canonicalize(upgrade_opset(load_zoo("shufflenet"), 13)))
    before = original.SerializeToString()

    exported = export_options(original, fold_bn=True, opset=17)

    assert original.SerializeToString() == before  # the input is left as it is
    assert onnx_opset(exported) == 17
    assert exported.ir_version >= 8
    assert _bn_count(exported) == 0
    feed = dummy_feed(original, input_shapes(original))
    expected, got = _run(original, feed), _run(exported, feed)
    logits = original.graph.node[-1].input[0]
    _assert_close_at_scale(got[logits], expected[logits], logits)


def test_export_without_options_is_a_checked_copy() -> None:
    original = _gemm_model(np.random.default_rng(5))
    exported = export_options(original)
    assert exported == original
    assert exported is not original


@pytest.mark.parametrize("opset, error", [(12, PassError), (99, BadSpecError), (0, BadSpecError)])
def test_bad_opset_is_one_line(opset: int, error: type[Exception]) -> None:
    model = _conv_model(np.random.default_rng(6))
    with pytest.raises(error) as caught:
        export_options(model, opset=opset)
    message = str(caught.value)
    assert "\n" not in message and str(opset) in message and ".h:" not in message
