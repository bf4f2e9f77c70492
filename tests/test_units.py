"""Module units around squeeze-and-excitation gates: an inverted-residual block without a skip
(expand -> depthwise -> SE gate -> project) prunes its expanded channels and the gate's with one
module unit, pruned mask-exactly; with a skip, the residual stream it joins stays kept."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxwootz.blocks_training import outside_layers
from onnxwootz.candidates import block_weights
from onnxwootz.core.onnx_helpers import dummy_feed
from onnxwootz.passes.units import plan_units
from onnxwootz.prepared import PreparedModel, prepare
from onnxwootz.pruning import prune_prepared, resolve_config
from test_apply_equivalence import check_equivalent


def _se_block_model(skip: bool) -> onnx.ModelProto:
    """stem conv 3->8 -> Relu -> [expand 8->16 -> Relu -> depthwise 3x3 -> Relu -> SE (pool ->
    reduce 16->4 -> Relu -> expand 4->16 -> Sigmoid -> Mul) -> project 16->8 (+ stem, with
    `skip`)] -> head conv 8->12 -> Relu -> pool -> Flatten -> Gemm 12->5."""
    rng = np.random.default_rng(0)
    shapes = {"w_stem": (8, 3, 3, 3), "w_expand": (16, 8, 1, 1), "w_dw": (16, 1, 3, 3), "w_reduce": (4, 16, 1, 1),
              "w_excite": (16, 4, 1, 1), "w_project": (8, 16, 1, 1), "w_head": (12, 8, 1, 1), "w_fc": (5, 12)}
    inits = [numpy_helper.from_array((rng.standard_normal(shape) * 0.4).astype(np.float32), name)
             for name, shape in shapes.items()]
    inits += [numpy_helper.from_array((rng.standard_normal(shape[0]) * 0.1).astype(np.float32), f"b{name[1:]}")
              for name, shape in shapes.items()]

    def conv(name: str, x: str, weight: str, **attrs) -> onnx.NodeProto:
        return helper.make_node("Conv", [x, weight, f"b{weight[1:]}"], [name], name=name, **attrs)

    def relu(x: str) -> onnx.NodeProto:
        return helper.make_node("Relu", [x], [f"{x}_relu"], name=f"{x}_relu")

    nodes = [
        conv("stem", "x", "w_stem", pads=[1, 1, 1, 1]), relu("stem"),
        conv("expand", "stem_relu", "w_expand"), relu("expand"),
        conv("dw", "expand_relu", "w_dw", group=16, pads=[1, 1, 1, 1]), relu("dw"),
        helper.make_node("GlobalAveragePool", ["dw_relu"], ["squeeze"], name="squeeze"),
        conv("reduce", "squeeze", "w_reduce"), relu("reduce"),
        conv("excite", "reduce_relu", "w_excite"),
        helper.make_node("Sigmoid", ["excite"], ["gate"], name="gate"),
        helper.make_node("Mul", ["dw_relu", "gate"], ["scaled"], name="scale"),
        conv("project", "scaled", "w_project"),
    ]
    block_out = "project"
    if skip:
        nodes.append(helper.make_node("Add", ["stem_relu", "project"], ["sum"], name="skip"))
        block_out = "sum"
    nodes += [
        conv("head", block_out, "w_head"), relu("head"),
        helper.make_node("GlobalAveragePool", ["head_relu"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "w_fc", "b_fc"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "se_block",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def _group(prepared: PreparedModel, producer: str) -> int:
    """The group whose filters include `producer`'s."""
    (group,) = [g.id for g in prepared.analysis.groups if producer in g.producers]
    return group


def _unit_of(prepared: PreparedModel, group: int):
    (unit,) = [unit for unit in prepared.units("module").units if group in unit.groups]
    return unit


def test_se_block_without_skip_prunes_its_expanded_channels_with_the_gate_in_one_unit() -> None:
    prepared = prepare(_se_block_model(skip=False))
    expanded, squeezed = _group(prepared, "expand"), _group(prepared, "reduce")
    assert {"dw", "excite"} <= set(prepared.analysis.groups[expanded].producers)
    plan = prepared.units("module")
    assert expanded not in plan.kept and squeezed not in plan.kept
    unit = _unit_of(prepared, expanded)
    # one module: expand, depthwise and the whole gate; its exit is the gated tensor
    assert unit.groups == sorted([expanded, squeezed]) and unit.prunes_exit
    assert {"expand", "dw", "squeeze", "reduce", "excite", "scale"} <= set(unit.nodes)
    assert "project" not in unit.nodes and unit.exits == ["scaled"]
    assert plan.modules[unit.module].gates == ["squeeze", "reduce", "reduce_relu", "excite", "gate", "scale"]
    # the tuning span runs on to the project conv that reads the pruned channels
    index = plan.units.index(unit)
    span = plan.span(index, index + 1)
    assert span.nodes[-1].name == "project" and span.exits == ["project"]
    # the project conv's and the stem's output groups are chain units of their own, as before
    assert [len(u.groups) for u in plan.units] == [1, 2, 1, 1]
    assert _unit_of(prepared, _group(prepared, "project")).prunes_exit
    # the shapes the prepared model knows give the units shape inference gives
    given = plan_units(prepared.model, prepared.analysis, "module", prepared.shapes)
    assert [(u.groups, u.nodes, u.prunes_exit) for u in given.units] == \
        [(u.groups, u.nodes, u.prunes_exit) for u in plan.units]


def test_the_conv_a_chain_unit_cuts_in_an_se_unit_is_trained_and_assembled_from_the_chains_block() -> None:
    """The stem's block runs on through the SE unit's module. Its expand conv, whose inputs the
    stem cuts, is the stem block's (trained there, held as the teacher's in the SE unit's block);
    the module's layers the SE unit cuts are the SE unit's block's (held in the stem's). Before,
    both blocks trained every layer and a candidate took all of them from the stem's block: its
    SE gate unfitted to the pruned channels (symbols: all units at 0.5 assembled 0.14, now 0.80)."""
    prepared = prepare(_se_block_model(skip=False))
    plan = prepared.units("module")
    stem = plan.units.index(_unit_of(prepared, _group(prepared, "stem")))
    se = plan.units.index(_unit_of(prepared, _group(prepared, "expand")))
    assert se == stem + 1 and plan.units[stem].prunes_exit
    assert {"expand", "dw", "reduce", "excite"} <= {node.name for node in plan.span(stem, se).nodes}
    assert plan.reads["w_expand"] == plan.reads["b_expand"] == {stem}
    cut_by_se = {f"{kind}_{layer}" for kind in "wb" for layer in ("dw", "reduce", "excite", "project")}
    assert all(plan.reads[name] == {se} for name in cut_by_se)
    assert {"w_expand", "b_expand"} <= outside_layers(plan.reads, range(se, se + 1))
    assert not cut_by_se & outside_layers(plan.reads, range(se, se + 1))
    assert cut_by_se - {"w_project", "b_project"} <= outside_layers(plan.reads, range(stem, stem + 1))
    assert "w_expand" not in outside_layers(plan.reads, range(stem, stem + 1))
    assert not (cut_by_se | {"w_expand"}) & outside_layers(plan.reads, range(stem, se + 1))
    in_stem_span = ["w_stem", "w_expand", "b_expand", *cut_by_se - {"w_project", "b_project"}]
    stem_block = {name: np.zeros(1) for name in in_stem_span}
    se_block = {name: np.ones(1) for name in ["w_expand", "b_expand", *cut_by_se]}
    merged = block_weights([(range(stem, stem + 1), stem_block), (range(se, se + 1), se_block)], plan.reads)
    assert merged["w_stem"] == 0 and merged["w_expand"] == merged["b_expand"] == 0
    assert all(merged[name] == 1 for name in cut_by_se)


def test_se_block_with_skip_keeps_the_residual_stream() -> None:
    prepared = prepare(_se_block_model(skip=True))
    plan = prepared.units("module")
    stream = _group(prepared, "project")
    assert _group(prepared, "stem") == stream
    assert plan.kept[stream] == "spans several modules (residual stream)"
    unit = _unit_of(prepared, _group(prepared, "expand"))
    assert unit.groups == sorted([_group(prepared, "expand"), _group(prepared, "reduce")])
    assert not unit.prunes_exit and {"expand", "excite", "project", "skip"} <= set(unit.nodes)


@pytest.mark.parametrize("skip", [False, True])
def test_se_block_units_prune_mask_exactly(skip: bool) -> None:
    source = _se_block_model(skip)
    prepared = prepare(source)
    feed = dummy_feed(prepared.model, {"x": [2, 3, 8, 8]}, seed=7)
    pruned = prune_prepared(prepared, resolve_config(prepared, "module", 0.5), "module")
    check_equivalent(prepared, pruned, feed, source)
    widths = {init.name: list(init.dims) for init in pruned.model.graph.initializer}
    assert widths["w_expand"][0] == widths["w_dw"][0] == widths["w_excite"][0] == widths["w_project"][1] == 8
    assert widths["w_reduce"][0] == 2
