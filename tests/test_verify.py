"""`apply` checks the pruned model against the masked original before it writes anything:
a model that does not run, or computes something else, is one PruningError and no file; the
result says what checked it (or why nothing could)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from onnxwootz import pruning
from onnxwootz.cli import app
from onnxwootz.core.errors import PruningError
from onnxwootz.passes import slicing
from onnxwootz.passes.graph_index import replace_initializer
from onnxwootz.pruning import apply


def _source(tmp_path: Path) -> Path:
    """conv(8) -> Reshape [1,8,64] -> Relu -> Reshape [1,8,8,8] -> conv(4): the Reshape targets
    hold the channel count as constants."""
    rng = np.random.default_rng(0)
    weight = lambda name, cout, cin: numpy_helper.from_array(  # noqa: E731
        (rng.standard_normal((cout, cin, 3, 3)) * 0.3).astype(np.float32), name)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="conv_1", pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["a", "flat_shape"], ["f"], name="flatten"),
             helper.make_node("Relu", ["f"], ["r"], name="relu"),
             helper.make_node("Reshape", ["r", "back_shape"], ["b"], name="unflatten"),
             helper.make_node("Conv", ["b", "w2"], ["y"], name="conv_2", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(
        nodes, "reshapes", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
        [weight("w1", 8, 3), weight("w2", 4, 8), numpy_helper.from_array(np.array([1, 8, 64], np.int64), "flat_shape"),
         numpy_helper.from_array(np.array([1, 8, 8, 8], np.int64), "back_shape")])
    path = tmp_path / "model.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))
    return path


def test_verified_by_onnxruntime(tmp_path: Path) -> None:
    result = apply(_source(tmp_path), rate=0.5, granularity="group", output=tmp_path / "out.onnx")
    assert (result.verified, result.verification) == ("onnxruntime", None)


def test_a_model_that_does_not_run_is_an_error_and_nothing_is_written(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The Reshape slicer switched off (the defect of issue 16a): ONNX Runtime cannot reshape."""
    monkeypatch.setitem(slicing.SLICERS, "Reshape", lambda node, s: None)
    out, plan = tmp_path / "out.onnx", tmp_path / "PLAN.json"
    with pytest.raises(PruningError, match="does not run in onnxruntime"):
        apply(_source(tmp_path), rate=0.5, granularity="group", output=out, plan=plan)
    assert not out.exists() and not plan.exists()
    cli = CliRunner().invoke(app, ["apply", str(_source(tmp_path)), "--rate", "0.5", "-g", "group", "-o", str(out),
                                   "--plan", str(plan)])
    assert cli.exit_code == PruningError.exit_code
    assert "Traceback" not in cli.output and "nothing written" in cli.output
    assert not out.exists() and not plan.exists()


def test_a_model_that_computes_something_else_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pruned weight scaled after slicing: the model runs but is not the masked original."""
    real = pruning.prune_prepared

    def wrong(*args, **kwargs):
        pruned = real(*args, **kwargs)
        w2 = next(init for init in pruned.model.graph.initializer if init.name == "w2")
        replace_initializer(pruned.model, "w2", numpy_helper.to_array(w2) * 1.5)
        return pruned

    monkeypatch.setattr(pruning, "prune_prepared", wrong)
    out = tmp_path / "out.onnx"
    with pytest.raises(PruningError, match="differs from the masked original"):
        apply(_source(tmp_path), rate=0.5, granularity="group", output=out)
    assert not out.exists()


def test_cli_json_reports_the_verification(tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    cli = CliRunner().invoke(app, ["apply", str(_source(tmp_path)), "--rate", "0.5", "-o", str(out), "--json"])
    assert cli.exit_code == 0, cli.output
    summary = json.loads(cli.stdout)
    assert summary["verified"] == "onnxruntime" and summary["verification"] is None


def test_a_model_with_a_fixed_flatten_is_checked_at_its_own_size(tmp_path: Path) -> None:
    """conv (stride 8) -> Flatten -> Gemm(512 features) at 64x64: the half-size check cannot run
    the original (128 features), so the check runs at the analysed size and passes."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"], name="conv", strides=[8, 8], kernel_shape=[8, 8]),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc", "fc_b"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(
        nodes, "flatten", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(rng.standard_normal((8, 3, 8, 8)).astype(np.float32), "w"),
         numpy_helper.from_array(rng.standard_normal((4, 512)).astype(np.float32), "fc"),
         numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "fc_b")])
    path = tmp_path / "flatten.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))
    result = apply(path, rate=0.5, output=tmp_path / "out.onnx")
    assert result.params_after < result.params_before and result.verified == "onnxruntime"
