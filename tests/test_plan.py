"""PLAN.json schema 2 on hand-built graphs: a plan is read on the INPUT model as written (no
canonicalizer in between), so every name in it must be the input's: one BatchNorm tensor
read by two BatchNorms cut differently gets an entry per consumer, `@` in real names
round-trips, and schema-1 plans still read where they are unambiguous."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxwootz.core.errors import BadSpecError
from onnxwootz.core.onnx_helpers import dummy_feed
from onnxwootz.passes.mask import zero_removed
from onnxwootz.passes.plan import plan_slices
from onnxwootz.prepared import prepare
from onnxwootz.pruning import apply
from onnxwootz.runtime.sessions import cpu_session
from tests.cli_helpers import one_clean_line, run_cli

RNG = np.random.default_rng(0)


def _conv(name: str | None, x: str, w: str, y: str) -> onnx.NodeProto:
    return helper.make_node("Conv", [x, w], [y], name=name or "", pads=[1, 1, 1, 1])


def _weight(name: str, cout: int, cin: int) -> onnx.TensorProto:
    return numpy_helper.from_array((RNG.standard_normal((cout, cin, 3, 3)) * 0.3).astype(np.float32), name)


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "plan", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def densenet_like() -> onnx.ModelProto:
    """conv -> BN -> Relu -> conv -> BN -> Relu -> conv, both BatchNorms (unnamed, as the
    canonicalizer must name them) reading one deduplicated `ones` (scale and variance) and one
    `zeros` (bias and mean), as a legacy export of DenseNet with fresh weights does."""
    ones = numpy_helper.from_array(np.ones(8, np.float32), "ones")
    zeros = numpy_helper.from_array(np.zeros(8, np.float32), "zeros")
    nodes = [_conv("conv_1", "x", "w1", "a"),
             helper.make_node("BatchNormalization", ["a", "ones", "zeros", "zeros", "ones"], ["an"]),
             helper.make_node("Relu", ["an"], ["ar"]),
             _conv("conv_2", "ar", "w2", "b"),
             helper.make_node("BatchNormalization", ["b", "ones", "zeros", "zeros", "ones"], ["bn"]),
             helper.make_node("Relu", ["bn"], ["br"]),
             _conv("conv_3", "br", "w3", "y")]
    return _model(nodes, [_weight("w1", 8, 3), _weight("w2", 8, 8), _weight("w3", 4, 8), ones, zeros])


def paddle_like() -> onnx.ModelProto:
    """paddle2onnx-style names: the first conv's weight comes from a Constant node `Constant@86`;
    two BatchNorms named `0` and `1` read one scale `scale@0`... and one bias `s`, and BN `0`'s
    mean is a real tensor named `s@0` (what `<tensor>@<consumer>` would call s as BN 0 reads it)."""
    vector = lambda name: numpy_helper.from_array(RNG.uniform(0.5, 1.5, 8).astype(np.float32), name)  # noqa: E731
    weight = _weight("Constant@86", 8, 3)
    nodes = [helper.make_node("Constant", [], ["Constant@86"], value=weight),
             _conv("Conv@0", "x", "Constant@86", "a"),
             helper.make_node("BatchNormalization", ["a", "scale@0", "s", "s@0", "var"], ["Reshape@0"], name="0"),
             helper.make_node("Relu", ["Reshape@0"], ["ar"]),
             _conv("Conv@1", "ar", "w2", "b"),
             helper.make_node("BatchNormalization", ["b", "scale@0", "s", "mean", "var"], ["bn"], name="1"),
             helper.make_node("Relu", ["bn"], ["br"]),
             _conv("Conv@2", "br", "w3", "y")]
    return _model(nodes, [_weight("w2", 8, 8), _weight("w3", 4, 8), vector("scale@0"), vector("s"), vector("s@0"),
                          vector("mean"), vector("var")])


def mask_input(model: onnx.ModelProto, plan: list[dict], ignore_consumers: bool = False) -> onnx.ModelProto:
    """The input model (not canonicalized) with every slice the plan removes zeroed: a cut with a
    consumer goes to a copy of the tensor that only that node reads. Weights here are
    initializers or Constant nodes."""
    masked = onnx.ModelProto()
    masked.CopyFrom(model)
    graph = masked.graph
    constants = {node.output[0]: node for node in graph.node if node.op_type == "Constant"}
    inits = {init.name: init for init in graph.initializer}

    def value(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name] if name in inits else constants[name].attribute[0].t)

    shared = [e for e in plan if ignore_consumers or "consumer" not in e]
    for name in {e["tensor"] for e in shared}:
        array = zero_removed(value(name), [e for e in shared if e["tensor"] == name])
        if name in inits:
            inits[name].CopyFrom(numpy_helper.from_array(array, name))
        else:
            constants[name].attribute[0].t.CopyFrom(numpy_helper.from_array(array))
    own: dict[tuple[str, int], list[dict]] = {}
    for e in plan:
        if "consumer" in e and not ignore_consumers:
            ref = e["consumer"]
            index = next(i for i, n in enumerate(graph.node)
                         if ("name" in ref and n.name == ref["name"]) or ref.get("output") in n.output)
            own.setdefault((e["tensor"], index), []).append(e)
    for count, ((name, index), entries) in enumerate(own.items()):
        private = f"masked_{count}"
        graph.initializer.append(numpy_helper.from_array(zero_removed(value(name), entries), private))
        node = graph.node[index]
        assert name in node.input, (name, index)
        for slot, input_name in enumerate(node.input):
            if input_name == name:
                node.input[slot] = private
    return masked


def _outputs(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    return cpu_session(model).run(None, feed)[0]


def _relative(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def _apply(model: onnx.ModelProto, folder: Path, **options) -> tuple[onnx.ModelProto, dict, Path]:
    source = folder / "model.onnx"
    onnx.save_model(model, str(source))
    apply(source, granularity="group", output=folder / "out.onnx", plan=folder / "PLAN.json",
          input_shape=[1, 3, 8, 8], **options)
    return onnx.load(str(folder / "out.onnx")), json.loads((folder / "PLAN.json").read_text()), source


CUTS = {"g3": 0.25, "g4": 0.5}  # the two BatchNorms' groups, cut differently


def test_shared_batchnorm_tensor_is_cut_per_consumer(tmp_path: Path) -> None:
    model = densenet_like()
    assert sorted(unit.name for unit in prepare(model, [1, 3, 8, 8]).units("group").units) == sorted(CUTS)
    written, plan, _ = _apply(model, tmp_path, config=CUTS)
    assert plan["schema"] == 2 and plan["config"] == CUTS
    by_tensor = {}
    for entry in plan["slices"]:
        by_tensor.setdefault(entry["tensor"], []).append(entry)
    assert sorted(by_tensor) == ["ones", "w1", "w2", "w3", "zeros"]
    for name in ("ones", "zeros"):  # the BatchNorms are unnamed: named by their outputs
        assert [e["consumer"] for e in by_tensor[name]] == [{"output": "an"}, {"output": "bn"}]
        assert len(by_tensor[name][0]["keep"]) == 6 and len(by_tensor[name][1]["keep"]) == 4
    feed = dummy_feed(model, {"x": [2, 3, 8, 8]}, seed=3)
    actual = _outputs(written, feed)
    assert _relative(actual, _outputs(mask_input(model, plan["slices"]), feed)) <= 1e-5
    # the plan without its consumers (schema 1 named the tensor once) is far off
    assert _relative(actual, _outputs(mask_input(model, plan["slices"], ignore_consumers=True), feed)) > 1e-2


def test_at_signs_in_real_names_round_trip(tmp_path: Path) -> None:
    model = paddle_like()
    written, plan, source = _apply(model, tmp_path, rate=0.5)
    tensors = {entry["tensor"] for entry in plan["slices"]}
    assert {"Constant@86", "scale@0", "s@0", "s", "w2", "w3"} <= tensors
    assert {json.dumps(e["consumer"]) for e in plan["slices"] if "consumer" in e} <= {
        '{"name": "0"}', '{"name": "1"}'}
    feed = dummy_feed(model, {"x": [2, 3, 8, 8]}, seed=3)
    assert _relative(_outputs(written, feed), _outputs(mask_input(model, plan["slices"]), feed)) <= 1e-5
    again = tmp_path / "again"
    again.mkdir()
    _, replanned, _ = _apply(model, again, config=tmp_path / "PLAN.json")  # --config PLAN.json re-applies
    assert replanned == plan


def test_ambiguous_schema1_key_is_refused(tmp_path: Path) -> None:
    """`s@0` in a schema-1 plan: the real tensor, or `s` as node 0 reads it?"""
    model = paddle_like()
    canonical = prepare(model, [1, 3, 8, 8]).model
    with pytest.raises(BadSpecError, match="'s@0' is ambiguous"):
        plan_slices(canonical, {"s@0": [{"axis": 0, "keep": [0, 1]}]})
    source, old = tmp_path / "model.onnx", tmp_path / "OLD.json"
    onnx.save_model(model, str(source))
    old.write_text(json.dumps({"config": {}, "slices": {"s@0": [{"axis": 0, "keep": [0, 1]}]}}))
    result = run_cli("apply", str(source), "--config", str(old), "-g", "group", "--input-shape", "1,3,8,8",
                     "-o", str(tmp_path / "out.onnx"))
    one_clean_line(result, 4, "ambiguous")
    assert not (tmp_path / "out.onnx").exists()


def test_schema1_plan_still_reads(tmp_path: Path) -> None:
    """A schema-1 plan of named nodes (`<tensor>@<consumer>` for a per-consumer cut) reads onto
    the canonical model as its schema-2 form does, and `--config` takes it."""
    model = densenet_like()
    for index, node in enumerate(model.graph.node):
        node.name = node.name or f"node_{index}"
    _, plan, source = _apply(model, tmp_path, config=CUTS)
    old: dict[str, list[dict]] = {}
    for entry in plan["slices"]:
        key = entry["tensor"] + (f"@{entry['consumer']['name']}" if "consumer" in entry else "")
        old.setdefault(key, []).append({"axis": entry["axis"], "keep": entry["keep"]})
    assert {"ones@node_1", "ones@node_4", "zeros@node_1", "w2"} <= set(old)
    canonical = prepare(model, [1, 3, 8, 8]).model
    assert plan_slices(canonical, old) == plan_slices(canonical, plan["slices"])
    old_path = tmp_path / "OLD.json"
    old_path.write_text(json.dumps({"config": plan["config"], "slices": old}))
    again = tmp_path / "again"
    again.mkdir()
    _, replanned, _ = _apply(model, again, config=old_path)
    assert replanned == plan
