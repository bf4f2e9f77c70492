"""ARCHITECTURE invariant 4 on ops the analysis or ONNX Runtime does not know: a custom-domain
op is a barrier with its reason, shapes come from what the model declares (or the region past
an undeclared one is unprunable), and the convs around it still prune, mask-exactly (checked
with onnx's reference evaluator and a Python implementation of the op). ONNX Runtime's
com.microsoft Gelu, which it runs, is pruned through."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from onnxwootz.analysis import analyze
from onnxwootz.core.modelio import load_model
from onnxwootz.core.onnx_helpers import dummy_feed
from onnxwootz.passes.mask import ZeroRemoved
from onnxwootz.passes.plan import plan_slices
from onnxwootz.prepared import prepare
from onnxwootz.pruning import apply
from onnxwootz.runtime.sessions import cpu_session
from onnxwootz.runtime.torch_graph import TorchGraph


class Mystery(OpRun):
    """The test's implementation of com.example.Mystery: x * tanh(x), shape-preserving."""

    op_domain = "com.example"

    def _run(self, x):
        return (x * np.tanh(x),)


def _weight(name: str, cout: int, cin: int, seed: int) -> TensorProto:
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array((rng.standard_normal((cout, cin, 3, 3)) * 0.3).astype(np.float32), name)


def _model(middle: onnx.NodeProto, domain: str, declared: bool) -> onnx.ModelProto:
    """conv_1 -> relu_1 -> conv_2 -> `middle` (m -> mo) -> conv_3 -> relu_3 -> conv_4."""
    def conv(i: int, x: str, y: str) -> onnx.NodeProto:
        return helper.make_node("Conv", [x, f"w{i}"], [y], name=f"conv_{i}", pads=[1, 1, 1, 1])

    nodes = [conv(1, "x", "a"), helper.make_node("Relu", ["a"], ["ra"], name="relu_1"), conv(2, "ra", "m"), middle,
             conv(3, "mo", "c"), helper.make_node("Relu", ["c"], ["rc"], name="relu_3"), conv(4, "rc", "y")]
    value_info = [helper.make_tensor_value_info("mo", TensorProto.FLOAT, ["N", 8, "H", "W"])] if declared else []
    graph = helper.make_graph(
        nodes, "custom", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, "H", "W"])],
        [_weight("w1", 8, 3, 0), _weight("w2", 8, 8, 1), _weight("w3", 8, 8, 2), _weight("w4", 4, 8, 3)],
        value_info=value_info)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(domain, 1)],
                              ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def _mystery(declared: bool) -> onnx.ModelProto:
    return _model(helper.make_node("Mystery", ["m"], ["mo"], name="mystery", domain="com.example"), "com.example",
                  declared)


def _kept_by(result, producer: str):
    return next(kept for kept in result.kept_groups if producer in kept.producers)


def _pruned_producers(result, model: onnx.ModelProto) -> list[str]:
    groups = {group.id: group.producers for group in prepare(model, [1, 3, 8, 8]).analysis.groups}
    return sorted(p for unit in result.units for g in unit.groups for p in groups[g])


@pytest.mark.parametrize("declared", [True, False])
def test_custom_op_is_a_barrier_and_the_convs_around_it_prune(declared: bool, tmp_path: Path) -> None:
    model = _mystery(declared)
    source = tmp_path / "mystery.onnx"
    onnx.save_model(model, str(source))
    result = analyze(source, input_shape=[1, 3, 8, 8], granularity="group")
    kept = _kept_by(result, "conv_2")
    assert "Mystery 'mystery'" in kept.reason and "com.example" in kept.reason
    if declared:  # shapes go on past the op: conv_3's filters prune
        assert _pruned_producers(result, model) == ["conv_1", "conv_3"]
    else:  # nothing knows the shapes past it: that region is kept, and says why
        assert _pruned_producers(result, model) == ["conv_1"]
        assert "shape of 'c' is unknown" in _kept_by(result, "conv_3").reason

    out, plan = tmp_path / "pruned.onnx", tmp_path / "PLAN.json"
    applied = apply(source, rate=0.5, granularity="group", output=out, plan=plan, input_shape=[1, 3, 8, 8])
    assert applied.params_after < applied.params_before
    assert applied.verified is None and "com.example" in applied.verification
    written = load_model(out)
    onnx.checker.check_model(written, full_check=True)
    masked = prepare(source, [1, 3, 8, 8]).model
    ZeroRemoved(plan_slices(masked, json.loads(plan.read_text())["slices"]))(masked)
    feed = dummy_feed(written, {"x": [2, 3, 8, 8]})
    expected = ReferenceEvaluator(masked, new_ops=[Mystery]).run(None, feed)[0]
    actual = ReferenceEvaluator(written, new_ops=[Mystery]).run(None, feed)[0]
    assert actual.shape == (2, 4, 8, 8)
    assert np.max(np.abs(actual - expected)) <= 1e-5 * np.max(np.abs(expected))


def test_microsoft_gelu_is_pruned_through(tmp_path: Path) -> None:
    """com.microsoft Gelu (ONNX Runtime's contrib op) is elementwise: conv_2's filters prune
    through it, the result runs in ONNX Runtime as the masked original, and the torch view
    runs it as ONNX Runtime does."""
    model = _model(helper.make_node("Gelu", ["m"], ["mo"], name="gelu", domain="com.microsoft"), "com.microsoft",
                   declared=False)
    source = tmp_path / "gelu.onnx"
    onnx.save_model(model, str(source))
    result = analyze(source, input_shape=[1, 3, 8, 8], granularity="group")
    assert _pruned_producers(result, model) == ["conv_1", "conv_2", "conv_3"]
    out, plan = tmp_path / "pruned.onnx", tmp_path / "PLAN.json"
    applied = apply(source, rate=0.5, granularity="group", output=out, plan=plan, input_shape=[1, 3, 8, 8])
    assert applied.verified == "onnxruntime"
    slices = json.loads(plan.read_text())["slices"]
    assert {"w2", "w3"} <= {entry["tensor"] for entry in slices}
    masked = prepare(source, [1, 3, 8, 8]).model
    ZeroRemoved(plan_slices(masked, slices))(masked)
    written = load_model(out)
    feed = dummy_feed(written, {"x": [2, 3, 8, 8]})
    expected = cpu_session(masked).run(None, feed)[0]
    actual = cpu_session(written).run(None, feed)[0]
    assert np.max(np.abs(actual - expected)) <= 1e-5 * np.max(np.abs(expected))
    with torch.no_grad():
        viewed = TorchGraph(written)(torch.from_numpy(feed["x"])).numpy()
    assert np.max(np.abs(viewed - actual)) <= 1e-5 * np.max(np.abs(actual))
