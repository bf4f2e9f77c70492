"""The invariants of `apply`, on every model-zoo graph and every builder from both exporters:
1. mask equivalence: the pruned model computes what the unpruned canonical model computes with
   every removed slice zeroed (uniform 0.5 and seeded random configurations, both granularities);
2. rate 0 everywhere changes nothing: same outputs, same sizes, no slices;
3. every written model passes the full checker, runs in ONNX Runtime, and keeps its outputs'
   names and shapes.
Also: PLAN.json's format and names, and `--round-to`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from models.builders import BUILDERS
from models.export import EXPORTERS, cached_export
from models.ocr import ocr_model
from models.zoo import ZOO_NAMES, load_zoo
from onnxwootz.cli import app
from onnxwootz.core.modelio import load_model
from onnxwootz.core.onnx_helpers import dummy_feed
from onnxwootz.passes.mask import ZeroRemoved
from onnxwootz.passes.plan import plan_slices
from onnxwootz.prepared import PreparedModel, prepare
from onnxwootz.pruning import PrunedModel, apply, prune_prepared, resolve_config
from onnxwootz.runtime.sessions import cpu_session
from onnxwootz.verify import squashed_outputs

TOLERANCE = 1e-5  # max |difference| relative to max |output|
RATES = (0.0, 0.3, 0.5, 0.7)
SEEDS = (1, 2, 3)
HUGE = {"vgg19", "bvlc_alexnet", "zfnet512"}  # 60-140M params: one configuration per granularity
CASES = [f"zoo:{name}" for name in ZOO_NAMES] + [
    f"export:{name}:{exporter}" for name in sorted(BUILDERS) for exporter in EXPORTERS]


def _source(kind: str) -> onnx.ModelProto:
    if kind.startswith("zoo:"):
        return load_zoo(kind[4:])
    _, name, exporter = kind.split(":")
    return cached_export(name, exporter)


def _feed(prepared: PreparedModel, kind: str) -> dict[str, np.ndarray]:
    """Zoo graphs have a static batch 1; exported builders run at batch 2 (dynamic batch)."""
    shapes = prepared.feed_shapes
    if kind.startswith("export:"):
        shapes = {name: [2] + dims[1:] for name, dims in shapes.items()}
    return dummy_feed(prepared.model, shapes, seed=7)


def _probe(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy that also outputs the logits of each final Softmax or Sigmoid (a saturated one
    hides differences in front of it)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    outputs = {value.name for value in model.graph.output}
    for logits, _ in squashed_outputs(model).values():
        if logits not in outputs:
            copy.graph.output.append(helper.make_empty_tensor_value_info(logits))
    return copy


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray], probe_from: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Outputs by name, plus the pre-Softmax tensors of `probe_from` (the canonical model)."""
    probed = _probe(probe_from)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for value in probed.graph.output[len(probe_from.graph.output):]:
        copy.graph.output.append(value)
    session = cpu_session(copy)
    names = [value.name for value in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


def _relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(actual - expected)) / max(float(np.max(np.abs(expected))), 1e-12))


def assert_close(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], model: onnx.ModelProto) -> None:
    """Every tensor within TOLERANCE of max |expected|; a Softmax (Sigmoid) output may also move
    by as much as (a quarter of) its logits moved (their Lipschitz constants in the max norm),
    which is what a saturated Softmax over logits of 1e4, or a Sigmoid whose outputs are all
    near 0, does in float32."""
    squash = squashed_outputs(model)
    for name, value in expected.items():
        assert actual[name].shape == value.shape, name
        error = _relative_error(actual[name], value)
        logits, lipschitz = squash.get(name, (None, 0.0))
        if logits in expected and error > TOLERANCE:
            assert _relative_error(actual[logits], expected[logits]) <= TOLERANCE, logits
            moved = float(np.max(np.abs(actual[logits] - expected[logits])))
            assert np.max(np.abs(actual[name] - value)) <= lipschitz * moved * (1 + 1e-3), \
                f"{name} moved more than its logits allow"
            continue
        assert error <= TOLERANCE, f"{name}: relative error {error:.2e}"


def random_config(prepared: PreparedModel, granularity: str, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {unit.name: float(rng.choice(RATES)) for unit in prepared.units(granularity).units}


def check_plan(plan: list[dict], source: onnx.ModelProto, canonical: onnx.ModelProto) -> None:
    """Schema-2 entries {tensor, [consumer], axis, keep}: every tensor is a tensor of the input
    model and every consumer a node of it (a unique name, or an output) that reads that tensor;
    per target at most one cut per axis, with sorted, distinct, in-range indices."""
    tensors = {init.name for init in source.graph.initializer} | {v.name for v in source.graph.input} | {
        name for node in source.graph.node for name in [*node.input, *node.output]}
    names = Counter(node.name for node in source.graph.node)
    for entry in plan:
        assert set(entry) - {"consumer"} == {"tensor", "axis", "keep"}, entry
        assert entry["tensor"] in tensors, f"plan names '{entry['tensor']}', no tensor of the input model"
        if "consumer" in entry:
            ref = entry["consumer"]
            if "name" in ref:
                assert set(ref) == {"name"} and names[ref["name"]] == 1, ref
                node = next(node for node in source.graph.node if node.name == ref["name"])
            else:
                assert set(ref) == {"output"}, ref
                node = next(node for node in source.graph.node if ref["output"] in node.output)
                assert names[node.name] != 1 or not node.name, f"{ref}: a node with a unique name is named"
            assert entry["tensor"] in node.input, f"{ref} does not read '{entry['tensor']}' in the input"
    dims = {init.name: list(init.dims) for init in canonical.graph.initializer}
    for name, entries in plan_slices(canonical, plan).items():
        axes = [entry["axis"] for entry in entries]
        assert len(set(axes)) == len(axes)
        for entry in entries:
            axis, keep = entry["axis"], entry["keep"]
            assert isinstance(axis, int) and 0 <= axis < len(dims[name])
            assert all(isinstance(i, int) for i in keep) and keep == sorted(set(keep))
            assert keep and 0 <= keep[0] and keep[-1] < dims[name][axis] and len(keep) < dims[name][axis]


def masked_by_plan(canonical: onnx.ModelProto, plan: list[dict] | dict[str, list[dict]]) -> onnx.ModelProto:
    """A copy of the canonical model with every slice the plan removes zeroed."""
    masked = onnx.ModelProto()
    masked.CopyFrom(canonical)
    ZeroRemoved(plan_slices(canonical, plan))(masked)
    return masked


def check_equivalent(prepared: PreparedModel, pruned: PrunedModel, feed: dict[str, np.ndarray],
                     source: onnx.ModelProto) -> None:
    """Invariants 1 and 3 for one pruned model (the masked model has the original's graph, so
    its outputs also give the names and shapes to keep); the plan in `source`'s names."""
    onnx.checker.check_model(pruned.model, full_check=True)
    masked = masked_by_plan(prepared.model, pruned.slices)
    expected = _run(masked, feed, prepared.model)
    actual = _run(pruned.model, feed, prepared.model)
    assert [v.name for v in pruned.model.graph.output] == [v.name for v in prepared.model.graph.output]
    assert list(actual) == list(expected)
    assert_close(actual, expected, prepared.model)
    lost = any(unit.kept < unit.channels for unit in pruned.units)
    assert (pruned.params < prepared.params) == lost == bool(pruned.slices)
    check_plan(pruned.slices, source, prepared.model)


def check_rate_zero(prepared: PreparedModel, feed: dict[str, np.ndarray]) -> None:
    """Invariant 2: nothing sliced, sizes unchanged, the same outputs."""
    for granularity in ("module", "group"):
        pruned = prune_prepared(prepared, resolve_config(prepared, granularity, 0.0), granularity)
        assert pruned.slices == []
        assert (pruned.params, pruned.macs) == (prepared.params, prepared.macs)
        assert all(unit.kept == unit.channels for unit in pruned.units)
        sizes = {init.name: list(init.dims) for init in prepared.model.graph.initializer}
        assert {init.name: list(init.dims) for init in pruned.model.graph.initializer} == sizes
    onnx.checker.check_model(pruned.model, full_check=True)
    base = _run(prepared.model, feed, prepared.model)
    after = _run(pruned.model, feed, prepared.model)
    assert list(after) == list(base)
    for name, value in base.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)


@pytest.mark.parametrize("kind", CASES)
def test_invariants(kind: str) -> None:
    source = _source(kind)
    prepared = prepare(source)
    feed = _feed(prepared, kind)
    huge = kind[4:] in HUGE
    if not huge:
        check_rate_zero(prepared, feed)
    for granularity in ("module", "group"):
        if huge:
            configs = [resolve_config(prepared, "module", 0.5)] if granularity == "module" else \
                [random_config(prepared, granularity, SEEDS[0])]
        else:
            configs = [resolve_config(prepared, granularity, 0.5)] + [
                random_config(prepared, granularity, seed) for seed in SEEDS]
        for config in configs:
            pruned = prune_prepared(prepared, config, granularity)
            assert pruned.config == config
            check_equivalent(prepared, pruned, feed, source)


def _saved(name: str, exporter: str, folder: Path) -> Path:
    path = folder / f"{name}-{exporter}.onnx"
    onnx.save_model(cached_export(name, exporter), str(path))
    return path


@pytest.mark.parametrize("name,exporter", [("resnet50", "legacy"), ("mobilenet_v2", "dynamo"),
                                           ("densenet", "legacy"), ("shufflenet", "dynamo")])
@pytest.mark.parametrize("granularity", ["module", "group"])
def test_written_model_and_plan(name: str, exporter: str, granularity: str, tmp_path: Path) -> None:
    """`apply` to files: the model reloads through load_model (checked), runs at batch 2 with the
    same output names and shapes, and is the mask of the canonical input by PLAN.json."""
    source = _saved(name, exporter, tmp_path)
    config = random_config(prepare(source), granularity, seed=11)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    result = apply(source, config=config_path, granularity=granularity, output=tmp_path / "out.onnx",
                   plan=tmp_path / "PLAN.json")
    assert result.params_after < result.params_before and result.macs_after < result.macs_before
    plan = json.loads((tmp_path / "PLAN.json").read_text())
    assert set(plan) == {"schema", "config", "slices"} and plan["schema"] == 2 and plan["config"] == config
    written = load_model(tmp_path / "out.onnx")
    onnx.checker.check_model(written, full_check=True)
    prepared = prepare(source)  # the canonical input model, onto which the plan reads
    check_plan(plan["slices"], load_model(source), prepared.model)
    feed = _feed(prepared, "export:")
    masked = masked_by_plan(prepared.model, plan["slices"])
    expected = _run(masked, feed, prepared.model)
    actual = _run(written, feed, prepared.model)
    assert [v.name for v in written.graph.output] == [v.name for v in prepared.model.graph.output]
    assert list(actual) == list(expected)
    assert_close(actual, expected, prepared.model)
    batch = written.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.HasField("dim_value")


def test_cli_apply_writes_model_and_plan(tmp_path: Path) -> None:
    source = _saved("resnet18", "legacy", tmp_path)
    out, plan = tmp_path / "out.onnx", tmp_path / "PLAN.json"
    result = CliRunner().invoke(app, ["apply", str(source), "--rate", "0.5", "-g", "group", "-o", str(out),
                                      "--plan", str(plan), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["params_after"] < summary["params_before"]
    written = json.loads(plan.read_text())
    assert set(written) == {"schema", "config", "slices"} and set(written["config"].values()) == {0.5}
    check_plan(written["slices"], load_model(source), prepare(source).model)
    onnx.checker.check_model(load_model(out), full_check=True)


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2", "inception_net"])
def test_round_to_8(name: str) -> None:
    """Every pruned filter count (a Conv's output channels) is a multiple of 8 or unchanged."""
    source = cached_export(name, "legacy")
    prepared = prepare(source)
    feed = _feed(prepared, "export:")
    before = _conv_filters(prepared.model)
    for granularity in ("module", "group"):
        for config in (resolve_config(prepared, granularity, 0.5), random_config(prepared, granularity, 5)):
            pruned = prune_prepared(prepared, config, granularity, round_to=8)
            after = _conv_filters(pruned.model)
            assert after != before
            for node, filters in after.items():
                assert filters == before[node] or filters % 8 == 0, (node, filters, before[node])
            for unit in pruned.units:
                assert unit.kept == unit.channels or unit.kept % 8 == 0, unit
            check_equivalent(prepared, pruned, feed, source)


def _conv_filters(model: onnx.ModelProto) -> dict[str, int]:
    dims = {init.name: list(init.dims) for init in model.graph.initializer}
    return {node.name: dims[node.input[1]][0] for node in model.graph.node if node.op_type == "Conv"}


def test_oracle_catches_a_wrong_slice() -> None:
    """The check is not vacuous: masking other filters than the pruned model kept is caught."""
    prepared = prepare(cached_export("resnet18", "legacy"))
    pruned = prune_prepared(prepared, resolve_config(prepared, "group", 0.5), "group")
    weights = {node.input[1] for node in prepared.model.graph.node if node.op_type == "Conv"}
    wrong = [dict(entry) for entry in pruned.slices]
    entry = next(e for e in wrong if e["tensor"] in weights and e["axis"] == 0 and "consumer" not in e)
    filters = next(init.dims[0] for init in prepared.model.graph.initializer if init.name == entry["tensor"])
    removed = sorted(set(range(filters)) - set(entry["keep"]))
    entry["keep"] = sorted(removed + entry["keep"][len(removed):])  # same count, other filters
    assert wrong != pruned.slices
    masked = masked_by_plan(prepared.model, wrong)
    feed = _feed(prepared, "export:")
    expected = _run(masked, feed, prepared.model)
    actual = _run(pruned.model, feed, prepared.model)
    assert max(_relative_error(actual[name], value) for name, value in expected.items()) > 100 * TOLERANCE


OCR_SHAPES = {"cls": ([1, 3, 48, 192], [2, 3, 48, 320]), "det": ([1, 3, 320, 320], [1, 3, 256, 384]),
              "rec": ([1, 3, 48, 320], [1, 3, 48, 160])}


@pytest.mark.parametrize("kind", sorted(OCR_SHAPES))
@pytest.mark.parametrize("granularity", ["module", "group"])
def test_paddleocr_models(kind: str, granularity: str, tmp_path: Path) -> None:
    """PaddleOCR's real graphs (run-time flatten arithmetic, dynamic H/W): the written model is
    the mask of the input by PLAN.json at the analysed size and at another size, and keeps the
    input's dynamic dims."""
    source = ocr_model(kind)
    shape, other = OCR_SHAPES[kind]
    result = apply(source, rate=0.5, granularity=granularity, output=tmp_path / "out.onnx",
                   plan=tmp_path / "PLAN.json", input_shape=shape)
    assert result.macs_after < result.macs_before
    written = load_model(tmp_path / "out.onnx")
    onnx.checker.check_model(written, full_check=True)
    prepared = prepare(source, shape)
    slices = json.loads((tmp_path / "PLAN.json").read_text())["slices"]
    check_plan(slices, load_model(source), prepared.model)
    masked = masked_by_plan(prepared.model, slices)
    for size in (shape, other):
        feed = dummy_feed(prepared.model, {"x": size}, seed=7)
        actual, expected = _run(written, feed, prepared.model), _run(masked, feed, prepared.model)
        assert list(actual) == list(expected)
        assert_close(actual, expected, prepared.model)
    dims = [d.dim_value if d.HasField("dim_value") else d.dim_param
            for d in written.graph.input[0].type.tensor_type.shape.dim]
    original = [d.dim_value if d.HasField("dim_value") else d.dim_param
                for d in load_model(source).graph.input[0].type.tensor_type.shape.dim]
    assert dims == original


def _conv_weight(name: str, cout: int, cin: int, seed: int) -> onnx.TensorProto:
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array((rng.standard_normal((cout, cin, 3, 3)) * 0.3).astype(np.float32), name)


def _ints(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def _reshape_model(target_nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], target: str) -> onnx.ModelProto:
    """x[N,3,8,8] -> conv(8) -> Relu -> Reshape(target) -> Relu -> Reshape[N,8,8,8] -> conv(4): the
    first Reshape's target is built by `target_nodes`."""
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="conv_1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_1"),
        *target_nodes,
        helper.make_node("Reshape", ["ra", target], ["flat"], name="reshape_1"),
        helper.make_node("Relu", ["flat"], ["rf"], name="relu_2"),
        helper.make_node("Shape", ["ra"], ["shape_back"], name="shape_back"),
        helper.make_node("Reshape", ["rf", "shape_back"], ["back"], name="reshape_2"),
        helper.make_node("Conv", ["back", "w2"], ["y"], name="conv_2", pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes, "reshapes", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [_conv_weight("w1", 8, 3, 0), _conv_weight("w2", 4, 8, 1), *inits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


RESHAPE_TARGETS = {
    # [N, C, H*W] as a constant (the batch fixed at 1)
    "constant": ([], [_ints("target", [1, 8, 64])], "target"),
    # paddle2onnx style: Concat(Slice(Shape(x), 0, 1), [8, 64])
    "shape_slice_and_constant": (
        [helper.make_node("Shape", ["ra"], ["s"], name="shape"),
         helper.make_node("Slice", ["s", "zero", "one"], ["batch"], name="slice"),
         helper.make_node("Concat", ["batch", "rest"], ["target"], name="concat", axis=0)],
        [_ints("zero", [0]), _ints("one", [1]), _ints("rest", [8, 64])], "target"),
    # torch style x.view(x.size(0), x.size(1), -1): the channel entry is read from x's shape
    "shape_gather": (
        [helper.make_node("Shape", ["ra"], ["s"], name="shape"),
         helper.make_node("Gather", ["s", "first_two"], ["nc"], name="gather", axis=0),
         helper.make_node("Concat", ["nc", "minus_one"], ["target"], name="concat", axis=0)],
        [_ints("first_two", [0, 1]), _ints("minus_one", [-1])], "target"),
}


@pytest.mark.parametrize("kind", sorted(RESHAPE_TARGETS))
def test_reshape_keeping_channels_is_sliced(kind: str) -> None:
    """A Reshape [N,C,H,W] -> [N,C,H*W] and back prunes through, whether its target is a constant
    or run-time shape arithmetic, and the result is the masked original."""
    model = _reshape_model(*RESHAPE_TARGETS[kind])
    prepared = prepare(model, [1, 3, 8, 8])
    assert prepared.analysis.groups[prepared.analysis.group_of_tensor("a")[0]].prunable
    pruned = prune_prepared(prepared, resolve_config(prepared, "group", 0.5), "group")
    assert pruned.units[0].kept == 4
    check_equivalent(prepared, pruned, dummy_feed(prepared.model, {"x": [1, 3, 8, 8]}, seed=7), model)


def _computed_channel_entry(read: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """A Reshape target [N, C * 1, -1] whose C is read from Shape(ra) by `read` (Gather or Slice)."""
    take = (helper.make_node("Gather", ["s", "one"], ["c"], name="gather_c", axis=0) if read == "Gather"
            else helper.make_node("Slice", ["s", "one", "two"], ["c"], name="slice_c"))
    nodes = [helper.make_node("Shape", ["ra"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "zero"], ["batch"], name="gather_n", axis=0), take,
             helper.make_node("Mul", ["c", "one_value"], ["c_times"], name="times"),
             helper.make_node("Concat", ["batch", "c_times", "minus_one"], ["target"], name="concat", axis=0)]
    inits = [_ints("zero", [0]), _ints("one", [1]), _ints("two", [2]), _ints("one_value", [1]),
             _ints("minus_one", [-1])]
    return nodes, inits


def test_reshape_with_computed_channel_entry_is_a_barrier() -> None:
    """The channel entry computed as Slice(Shape(x), 1, 2) * 1 (not the channel count read
    from x): the analysis cannot make it follow, so the Reshape keeps its channels and says why."""
    prepared = prepare(_reshape_model(*_computed_channel_entry("Slice"), "target"), [1, 3, 8, 8])
    group = prepared.analysis.groups[prepared.analysis.group_of_tensor("a")[0]]
    assert not group.prunable and "reshape_1" in group.kept_reason and "computed" in group.kept_reason


def test_a_channel_count_read_by_gather_is_folded_and_the_reshape_follows() -> None:
    """Gather(Shape(x), 1) * 1: x's channel count is its conv's filter count whatever the input
    size, so canonicalization folds it to a constant, which the Reshape rule rewrites: the
    pruned model is the masked original."""
    model = _reshape_model(*_computed_channel_entry("Gather"), "target")
    prepared = prepare(model, [1, 3, 8, 8])
    assert {"gather_c", "times"}.isdisjoint(node.name for node in prepared.model.graph.node)  # the batch stays read
    assert prepared.analysis.groups[prepared.analysis.group_of_tensor("a")[0]].prunable
    pruned = prune_prepared(prepared, resolve_config(prepared, "group", 0.5), "group")
    check_equivalent(prepared, pruned, dummy_feed(prepared.model, {"x": [1, 3, 8, 8]}, seed=7), model)


@pytest.mark.parametrize("kind", [f"export:shufflenet:{exporter}" for exporter in EXPORTERS] + ["zoo:shufflenet"])
def test_channel_shuffles_become_gathers_and_every_group_prunes(kind: str) -> None:
    """ShuffleNet v2 (our builder, both exporters: the legacy one computes the shuffle's targets
    and torch.chunk's bounds from Shape at run time) and the zoo's ShuffleNet v1 (grouped convs):
    no Reshape/Transpose pair is left, no channel group is kept for the shuffle or the chunk,
    and the pruned model is the masked original."""
    source = _source(kind)
    prepared = prepare(source)
    ops = Counter(node.op_type for node in prepared.model.graph.node)
    assert ops["Transpose"] == 0 and ops["Gather"] >= 2
    reasons = {group.kept_reason for group in prepared.analysis.groups if not group.prunable}
    assert all(reason.startswith(("graph input", "reaches graph output", "Softmax")) for reason in reasons), reasons
    pruned = prune_prepared(prepared, resolve_config(prepared, "group", 0.5), "group")
    assert prepared.macs / pruned.macs > 2.5
    check_equivalent(prepared, pruned, _feed(prepared, kind), source)
