"""`analyze`: the CLI's JSON is the API's result; module granularity finds the paper's modules
(one unit per ResNet bottleneck); an op the rule table does not know is a barrier that is
reported and that `apply` prunes around correctly; and group granularity reaches most of the
weights of ResNet-50 and MobileNetV2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from models import builders
from models.export import cached_export, export_legacy
from onnxwootz.analysis import analyze, unit_names
from onnxwootz.cli import app
from onnxwootz.core.modelio import load_model
from onnxwootz.core.onnx_helpers import dummy_feed, input_shapes
from onnxwootz.passes.mask import ZeroRemoved
from onnxwootz.passes.plan import plan_slices
from onnxwootz.prepared import prepare
from onnxwootz.pruning import apply
from onnxwootz.runtime.sessions import cpu_session


@pytest.fixture(scope="module")
def small_resnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("small") / "resnet18.onnx"
    onnx.save_model(cached_export("resnet18", "legacy"), str(path))
    return path


@pytest.mark.parametrize("granularity", ["module", "group"])
def test_cli_json_is_the_api_result(small_resnet: Path, granularity: str) -> None:
    result = CliRunner().invoke(app, ["analyze", str(small_resnet), "--granularity", granularity, "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    expected = analyze(small_resnet, granularity=granularity).to_dict()
    assert printed == expected
    assert {"params", "macs", "units", "kept_groups", "schema_version"} <= set(printed)
    assert printed["granularity"] == granularity and printed["units"]
    assert [unit["name"] for unit in printed["units"]] == unit_names(small_resnet, granularity)


def test_module_units_are_the_resnet50_bottlenecks() -> None:
    model = export_legacy(builders.resnet50(num_classes=10, width=8).eval(), torch.zeros(1, 3, 64, 64))
    result = analyze(model, granularity="module")
    groups = prepare_groups(model)
    producers = {unit.name: sorted(p for g in unit.groups for p in groups[g]) for unit in result.units}
    bottlenecks = [f"/layer{stage}/layer{stage}.{block}/" for stage, blocks in zip(range(1, 5), (3, 4, 6, 3))
                   for block in range(blocks)]
    assert len(bottlenecks) == 16
    for prefix in bottlenecks:
        owners = [name for name, convs in producers.items() if any(conv.startswith(prefix) for conv in convs)]
        assert len(owners) == 1, (prefix, owners)
        # the bottleneck's unit prunes its conv1 and conv2 filters; conv3 feeds the residual stream
        assert producers[owners[0]] == [f"{prefix}conv1/Conv", f"{prefix}conv2/Conv"]
    others = [name for name, convs in producers.items() if not any(c.startswith("/layer") for c in convs)]
    assert len(result.units) == 16 + len(others) and len(others) <= 1  # at most the stem besides
    reasons = {kept.reason for kept in result.kept_groups}
    assert any("residual" in reason for reason in reasons)


def prepare_groups(model: onnx.ModelProto) -> dict[int, list[str]]:
    return {group.id: list(group.producers) for group in prepare(model).analysis.groups}


def _barrier_model() -> onnx.ModelProto:
    """conv_a -> Relu -> LpNormalization over channels -> conv_b -> Relu -> conv_c -> Relu -> conv_d."""
    rng = np.random.default_rng(0)

    def weight(name: str, cout: int, cin: int) -> TensorProto:
        return numpy_helper.from_array((rng.standard_normal((cout, cin, 3, 3)) * 0.3).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "wa"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        helper.make_node("LpNormalization", ["ra"], ["n"], name="lpnorm", axis=1, p=2),
        helper.make_node("Conv", ["n", "wb"], ["b"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["b"], ["rb"], name="relu_b"),
        helper.make_node("Conv", ["rb", "wc"], ["c"], name="conv_c", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["rc"], name="relu_c"),
        helper.make_node("Conv", ["rc", "wd"], ["y"], name="conv_d", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "barrier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 8, 8])],
        [weight("wa", 8, 3), weight("wb", 16, 8), weight("wc", 16, 16), weight("wd", 4, 16)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("granularity", ["module", "group"])
def test_unknown_op_is_a_reported_barrier_and_apply_prunes_around_it(granularity: str, tmp_path: Path) -> None:
    source = tmp_path / "barrier.onnx"
    onnx.save_model(_barrier_model(), str(source))
    result = analyze(source, granularity="group")
    barrier = [kept for kept in result.kept_groups if "conv_a" in kept.producers]
    assert len(barrier) == 1
    assert re.search(r"LpNormalization\b.*\blpnorm\b", barrier[0].reason), barrier[0].reason
    assert barrier[0].channels == 8
    groups = prepare_groups(_barrier_model())
    unit_producers = sorted(p for unit in result.units for g in unit.groups for p in groups[g])
    assert unit_producers == ["conv_b", "conv_c"]

    out, plan_path = tmp_path / "pruned.onnx", tmp_path / "PLAN.json"
    applied = apply(source, rate=0.5, granularity=granularity, output=out, plan=plan_path)
    assert applied.params_after < applied.params_before
    written = load_model(out)
    onnx.checker.check_model(written, full_check=True)
    by_name = {init.name: list(init.dims) for init in written.graph.initializer}
    assert by_name["wa"] == [8, 3, 3, 3]  # the barrier's input channels all stay
    assert by_name["wb"][1] == 8
    slices = json.loads(plan_path.read_text())["slices"]
    assert "wa" not in {entry["tensor"] for entry in slices}
    canonical = prepare(source).model
    ZeroRemoved(plan_slices(canonical, slices))(canonical)
    feed = dummy_feed(written, {"x": [2, 3, 8, 8]})
    expected = cpu_session(canonical).run(None, feed)[0]
    actual = cpu_session(written).run(None, feed)[0]
    assert actual.shape == (2, 4, 8, 8)
    assert np.max(np.abs(actual - expected)) <= 1e-5 * np.max(np.abs(expected))


@pytest.mark.parametrize("name,factory,least", [("resnet50", builders.resnet50, 0.70),
                                                ("mobilenet_v2", builders.mobilenet_v2, 0.60)])
def test_group_coverage_at_uniform_half(name: str, factory, least: float, tmp_path: Path) -> None:
    """Full-size torchvision architectures (1000 classes) at 1x3x224x224."""
    path = tmp_path / f"{name}.onnx"
    export_legacy(factory().eval(), torch.zeros(1, 3, 224, 224), path)
    assert input_shapes(load_model(path))["input"] == [1, 3, 224, 224]
    result = apply(path, rate=0.5, granularity="group")
    lost = 1 - result.params_after / result.params_before
    assert lost >= least, f"{name} loses only {lost:.1%} of its params"
    assert result.macs_after < 0.5 * result.macs_before
