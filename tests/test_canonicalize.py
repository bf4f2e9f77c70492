"""Canonicalization, one hand-made graph per rule: each rule does what it promises (Constants
become initializers, Identity/Dropout go, shared weights become private copies, constant
subgraphs fold, BatchNormalization stays, nodes get unique names) and ONNX Runtime computes
exactly what it computed on the graph as written."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from onnxwootz.passes.canonicalize import SHARED_KEY, canonicalize, shared_origins
from onnxwootz.runtime.sessions import cpu_session

RNG = np.random.default_rng(0)
X_SHAPE = [2, 3, 8, 8]


def _weight(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _init(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(array, name)


def _model(nodes: list[onnx.NodeProto], initializers: list[TensorProto], outputs: list[str],
           opset: int = 13, inputs: list[onnx.ValueInfoProto] | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "rule",
        inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, X_SHAPE)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)  # gives the outputs their shapes
    del model.graph.value_info[:]
    onnx.checker.check_model(model, full_check=True)
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    session = cpu_session(model)
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": x})))


def _canonical_same_outputs(model: onnx.ModelProto, reference: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """Canonicalize a copy; the outputs (names and values) must not change. ONNX Runtime picks
    other kernels once a weight is a constant, hence a float32 rounding tolerance. `reference`
    is what ONNX Runtime runs for the values before (when it refuses `model` itself)."""
    x = RNG.standard_normal(X_SHAPE).astype(np.float32)
    before = _run(reference or model, x)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    canonical = canonicalize(copy)
    onnx.checker.check_model(canonical, full_check=True)
    after = _run(canonical, x)
    assert list(after) == list(before)
    for name, value in before.items():
        assert np.max(np.abs(after[name] - value)) <= 1e-6 * np.max(np.abs(value)), name
    return canonical


def _ops(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def test_constant_holding_a_weight_becomes_an_initializer() -> None:
    w = _weight(4, 3, 3, 3)
    nodes = [
        helper.make_node("Constant", [], ["w_const"], name="const", value=numpy_helper.from_array(w)),
        helper.make_node("Conv", ["x", "w_const"], ["y"], name="conv", pads=[1, 1, 1, 1]),
    ]
    canonical = _canonical_same_outputs(_model(nodes, [], ["y"]))
    assert _ops(canonical) == ["Conv"]
    np.testing.assert_array_equal(_inits(canonical)["w_const"], w)
    assert list(canonical.graph.node[0].input) == ["x", "w_const"]


def test_identity_is_removed() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Identity", ["c"], ["c_id"], name="id_mid"),
        helper.make_node("Relu", ["c_id"], ["r"], name="relu"),
        helper.make_node("Identity", ["r"], ["y"], name="id_out"),  # feeds the graph output
    ]
    canonical = _canonical_same_outputs(_model(nodes, [_init("w", _weight(4, 3, 1, 1))], ["y"]))
    assert _ops(canonical) == ["Conv", "Relu"]
    assert [o.name for o in canonical.graph.output] == ["y"]
    assert canonical.graph.node[-1].output[0] == "y"


def test_identity_exposing_a_shared_initializer_becomes_a_private_copy() -> None:
    """The legacy torch exporter's weight sharing: conv_b reads the weight through an Identity."""
    w = _weight(3, 3, 3, 3)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Identity", ["w"], ["w_alias"], name="alias"),
        helper.make_node("Conv", ["a", "w_alias"], ["y"], name="conv_b", pads=[1, 1, 1, 1]),
    ]
    canonical = _canonical_same_outputs(_model(nodes, [_init("w", w)], ["y"]))
    assert _ops(canonical) == ["Conv", "Conv"]
    inits = _inits(canonical)
    assert set(inits) == {"w", "w_alias"}
    np.testing.assert_array_equal(inits["w_alias"], w)
    by_name = {node.name: node for node in canonical.graph.node}
    assert by_name["conv_a"].input[1] == "w" and by_name["conv_b"].input[1] == "w_alias"
    assert shared_origins(canonical) == {}  # each consumer already has its own name


def test_inference_dropout_is_removed() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Dropout", ["c"], ["d"], name="drop"),
        helper.make_node("Relu", ["d"], ["y"], name="relu"),
    ]
    canonical = _canonical_same_outputs(_model(nodes, [_init("w", _weight(4, 3, 1, 1))], ["y"]))
    assert _ops(canonical) == ["Conv", "Relu"]
    assert canonical.graph.node[1].input[0] == "c"


def test_initializer_read_by_two_convs_becomes_private_copies() -> None:
    w = _weight(3, 3, 3, 3)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["a", "w"], ["y"], name="conv_b", pads=[1, 1, 1, 1]),
    ]
    canonical = _canonical_same_outputs(_model(nodes, [_init("w", w)], ["y"]))
    inits = _inits(canonical)
    assert set(inits) == {"w@conv_a", "w@conv_b"}
    for array in inits.values():
        np.testing.assert_array_equal(array, w)
    by_name = {node.name: node for node in canonical.graph.node}
    assert by_name["conv_a"].input[1] == "w@conv_a" and by_name["conv_b"].input[1] == "w@conv_b"
    assert shared_origins(canonical) == {"w@conv_a": "w", "w@conv_b": "w"}
    assert [p.key for p in canonical.metadata_props] == [SHARED_KEY]


def _unsqueezed_scale_model(scale: np.ndarray) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Unsqueeze", ["scale", "axes"], ["scale_4d"], name="unsq"),
        helper.make_node("Mul", ["c", "scale_4d"], ["y"], name="mul"),
    ]
    inits = [_init("w", _weight(4, 3, 1, 1)), _init("scale", scale), _init("axes", np.array([1, 2], np.int64))]
    return _model(nodes, inits, ["y"])


def test_unsqueeze_of_an_initializer_is_folded() -> None:
    scale = _weight(4)
    canonical = _canonical_same_outputs(_unsqueezed_scale_model(scale))
    assert _ops(canonical) == ["Conv", "Mul"]
    np.testing.assert_array_equal(_inits(canonical)["scale_4d"], scale.reshape(4, 1, 1))


def test_folded_inputs_that_nothing_reads_are_dropped() -> None:
    """A folded node's inputs are dead weights once folded: left in, they count as params and
    stay full-size in every pruned model written."""
    canonical = _canonical_same_outputs(_unsqueezed_scale_model(_weight(4)))
    assert set(_inits(canonical)) == {"w", "scale_4d"}


def test_batchnormalization_is_kept() -> None:
    c = 4
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["y"], name="bn"),
    ]
    inits = [_init("w", _weight(c, 3, 3, 3)), _init("gamma", _weight(c)), _init("beta", _weight(c)),
             _init("mean", _weight(c)), _init("var", RNG.uniform(0.5, 1.5, c).astype(np.float32))]
    canonical = _canonical_same_outputs(_model(nodes, inits, ["y"]))
    assert _ops(canonical) == ["Conv", "BatchNormalization"]
    assert set(_inits(canonical)) == {"w", "gamma", "beta", "mean", "var"}


def test_unnamed_and_duplicate_nodes_get_unique_names() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"], name="same"),
        helper.make_node("Sigmoid", ["r"], ["s"], name="same"),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    model = _model(nodes, [_init("w", _weight(4, 3, 1, 1))], ["y"])
    unnamed = onnx.ModelProto()
    unnamed.CopyFrom(model)
    for node in unnamed.graph.node:
        node.name = ""  # ONNX Runtime refuses duplicate names, not missing ones
    canonical = _canonical_same_outputs(model, reference=unnamed)
    names = [node.name for node in canonical.graph.node]
    assert all(names) and len(set(names)) == len(names) == 4
    assert names[1] == "same"  # a name already unique is kept


def test_initializers_listed_as_inputs_are_not_inputs() -> None:
    """IR 3 graphs list every weight as a graph input too."""
    w = _weight(4, 3, 1, 1)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, X_SHAPE),
              helper.make_tensor_value_info("w", TensorProto.FLOAT, list(w.shape))]
    model = _model(nodes, [_init("w", w)], ["y"], inputs=inputs)
    canonical = _canonical_same_outputs(model)
    assert [value.name for value in canonical.graph.input] == ["x"]
