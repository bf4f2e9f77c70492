"""The op registry: what the toolchain knows about each ONNX op kind, declared once.

An entry gives the op's channel rule (channel_rules), its rule when it reads a channels-last
tensor, its slicer (slicers), its multiply-accumulates, which inputs are shape or index
parameters rather than data, its filter layout when it is a filter producer (filters), whether
a BatchNormalization after it folds into it, whether least squares can refit it, and how a
removed channel that is zero in its input comes out of it (zeros.py). Every
pass and cost model reads these entries; none keeps a list of op names of its own.

To support a new op: add its entry here (writing a rule or slicer where no existing one fits)
and its torch converter to runtime/torch_ops.OPS. tests/test_op_registry.py checks that an op
the analysis accepts can be sliced, counted and run by the torch view, and tests/test_op_matrix
wants a one-op case for it."""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import onnx

from onnxwootz.passes import channel_rules as rules
from onnxwootz.passes import filters
from onnxwootz.passes import slicers
from onnxwootz.passes import zeros
from onnxwootz.passes.channel_rules import Rule
from onnxwootz.passes.filters import FilterLayout
from onnxwootz.passes.graph_index import GraphIndex
from onnxwootz.passes.slicers import Slice

Macs = Callable[[onnx.NodeProto, dict[str, list[int]], list[int]], int]
"""Multiply-accumulates of a node for the whole batch, given the shapes and its output's shape."""


def no_macs(node: onnx.NodeProto, shapes: dict[str, list[int]], out: list[int]) -> int:
    """Ops counted as free: only layers with filters are counted (the paper's cost)."""
    return 0


@dataclasses.dataclass(frozen=True)
class Op:
    """Everything known about one op kind; a missing rule makes the op a channel barrier."""

    rule: Rule | None = None
    channels_last: Rule | None = None  # the rule for a node reading a channels-last tensor
    slicer: Slice | None = None  # cuts its weights, per-channel constants and shape parameters
    macs: Macs | None = None  # required for an op with a rule (no_macs: counted as free)
    parameters: frozenset[int] = frozenset()  # input slots holding shapes, axes, scales: not data
    filters: FilterLayout | None = None  # a filter producer: where its weight holds the filters
    folds_bn: bool = False  # a BatchNormalization right after it folds into its weight and bias
    refit: bool = False  # least squares (runtime/reconstruction) can refit its weights
    shape_only: bool = False  # reads only its input's shape, never the values
    folds_constants: bool = True  # canonicalize evaluates it once when all its inputs are constant
    zero: zeros.ZeroRule | None = None  # when a removed channel is zero after it (None: maybe not)


def _params(*slots: int) -> frozenset[int]:
    return frozenset(slots)


_KEEPS_ZERO = zeros.rule(zeros.INPUTS)
_ZEROES = zeros.rule(zeros.ALWAYS)
_ELEMENT = Op(rules.pass_through, rules.channels_last_unary, macs=no_macs)
"""Element by element: the channels stay on whatever axis holds them."""
_ELEMENT_KEEPS_ZERO = dataclasses.replace(_ELEMENT, zero=_KEEPS_ZERO)
"""Element by element with f(0) = 0."""
_PER_CHANNEL = Op(rules.pass_through, macs=no_macs, zero=_KEEPS_ZERO)
"""Per channel on axis 1 (pools, normalizations): not followed on a channels-last tensor."""
_ELEMENTWISE = Op(rules.elementwise, rules.channels_last_elementwise, slicers.broadcast_constants, no_macs,
                  zero=_KEEPS_ZERO)
"""Broadcasting operands: those spanning the channels are tied, constants along them sliced."""
_REDUCTION = Op(rules.reduction, macs=no_macs, parameters=_params(1), zero=_KEEPS_ZERO)


def _moves(rule: Rule, **fields) -> Op:
    """An op that moves, picks or regroups values without changing them."""
    return Op(rule, macs=no_macs, zero=_KEEPS_ZERO, **fields)


REGISTRY: dict[str, Op] = {
    "Conv": Op(rules.conv, slicer=slicers.conv, macs=filters.conv_macs, filters=filters.CONV, folds_bn=True,
               refit=True, zero=_ZEROES),
    "ConvTranspose": Op(rules.conv_transpose, slicer=slicers.conv_transpose, macs=filters.conv_transpose_macs,
                        filters=filters.CONV_TRANSPOSE, folds_bn=True, zero=_ZEROES),
    "Gemm": Op(rules.gemm, slicer=slicers.gemm, macs=filters.gemm_macs, filters=filters.GEMM, folds_bn=True,
               zero=_ZEROES),
    "MatMul": Op(rules.gemm, rules.channels_last_matmul, slicers.gemm, filters.matmul_macs, filters=filters.GEMM,
                 zero=_ZEROES),
    "Resize": _moves(rules.resize, slicer=slicers.resize, parameters=_params(1, 2, 3)),
    "Upsample": _moves(rules.resize, parameters=_params(1)),
    # not folded: a pruned LayerNorm pads its cut scale back at run time (slicers.layer_norm), and
    # folded, the padding zeros would count as parameters of the model read again
    "Pad": Op(rules.pad, macs=no_macs, parameters=_params(1, 2, 3), zero=zeros.pad, folds_constants=False),
    "Concat": _moves(rules.concat),
    "Split": _moves(rules.split, slicer=slicers.split, parameters=_params(1)),
    "Slice": _moves(rules.slice_, slicer=slicers.slice_, parameters=_params(1, 2, 3, 4)),
    "Gather": _moves(rules.gather, slicer=slicers.gather, parameters=_params(1)),
    "Flatten": _moves(rules.flatten),
    "Reshape": _moves(rules.reshape, slicer=slicers.reshape, parameters=_params(1)),
    "Transpose": _moves(rules.transpose, channels_last=rules.channels_last_transpose),
    "Squeeze": _moves(rules.squeeze_unsqueeze, parameters=_params(1)),
    "Unsqueeze": _moves(rules.squeeze_unsqueeze, parameters=_params(1)),
    "Shape": Op(rules.shape, macs=no_macs, shape_only=True),
    "Size": Op(rules.size, macs=no_macs, shape_only=True),
    "LayerNormalization": Op(rules.layer_norm, rules.channels_last_layer_norm, slicers.layer_norm, no_macs,
                             zero=_ZEROES),
    **dict.fromkeys(("Relu", "LeakyRelu", "HardSwish", "Tanh", "Elu", "Selu", "Cast", "Identity", "Neg", "Abs",
                     "Sqrt", "Erf", "Gelu", "Mish", "Softsign", "Celu", "ThresholdedRelu", "Floor", "Ceil", "Round",
                     "Sin"), _ELEMENT_KEEPS_ZERO),
    **dict.fromkeys(("Sigmoid", "HardSigmoid", "Softplus", "Exp", "Reciprocal", "Log", "Cos"), _ELEMENT),  # f(0) != 0
    "Clip": dataclasses.replace(_ELEMENT, parameters=_params(1, 2), zero=zeros.clip),
    "Dropout": dataclasses.replace(_ELEMENT_KEEPS_ZERO, parameters=_params(1, 2)),
    **dict.fromkeys(("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool"),
                    _PER_CHANNEL),
    # their per-channel parameters are cut, so a removed channel comes out zero
    "BatchNormalization": dataclasses.replace(_PER_CHANNEL, slicer=slicers.per_channel_params(1, 4), zero=_ZEROES),
    "InstanceNormalization": dataclasses.replace(_PER_CHANNEL, slicer=slicers.per_channel_params(1, 2),
                                                 zero=_ZEROES),
    **dict.fromkeys(("Add", "Sub", "Max", "Min", "Sum", "Mean"), _ELEMENTWISE),
    "Mul": dataclasses.replace(_ELEMENTWISE, zero=zeros.rule(zeros.ANY)),
    **dict.fromkeys(("Div", "PRelu"), dataclasses.replace(_ELEMENTWISE, zero=zeros.rule(zeros.FIRST))),
    "Pow": dataclasses.replace(_ELEMENTWISE, zero=None),
    **dict.fromkeys(("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL1", "ReduceL2", "ReduceProd"),
                    _REDUCTION),
    # channel barriers, listed for which of their inputs are shape or index parameters
    "Expand": Op(parameters=_params(1)),
    "Tile": Op(parameters=_params(1)),
    "ConstantOfShape": Op(parameters=_params(0)),
    "TopK": Op(parameters=_params(1)),
    "Range": Op(parameters=_params(0, 1, 2)),
    # never evaluated at canonicalization: random (a new value each run), or made an initializer
    **dict.fromkeys(("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                     "Bernoulli", "Constant"), Op(folds_constants=False)),
}
"""The ops of the standard ONNX domain, by op type."""

DOMAIN_REGISTRY: dict[tuple[str, str], Op] = {
    ("com.microsoft", "Gelu"): Op(rules.pass_through, macs=no_macs, zero=_KEEPS_ZERO),  # ONNX Runtime's contrib Gelu (erf form)
}
"""Ops of other domains, by (domain, op type)."""

RULES: dict[str, Rule] = {op: kind.rule for op, kind in REGISTRY.items() if kind.rule is not None}
CHANNELS_LAST_RULES: dict[str, Rule] = {op: kind.channels_last for op, kind in REGISTRY.items()
                                        if kind.channels_last is not None}
"""For a node that reads a channels-last tensor (channels on the last axis, as in a ConvNeXt
block's MLP); such a node with no entry here is a barrier."""
DOMAIN_RULES: dict[tuple[str, str], Rule] = {key: kind.rule for key, kind in DOMAIN_REGISTRY.items()
                                             if kind.rule is not None}


def op_kind(node: onnx.NodeProto) -> Op | None:
    """The registry's entry for a node's op kind (None: an op nothing here knows)."""
    if node.domain in ("", "ai.onnx"):
        return REGISTRY.get(node.op_type)
    return DOMAIN_REGISTRY.get((node.domain, node.op_type))


def data_inputs(node: onnx.NodeProto) -> list[str]:
    """The inputs of a node that carry activations or weights (not shape/axes/scales parameters)."""
    kind = op_kind(node)
    skip = kind.parameters if kind is not None else frozenset()
    return [name for index, name in enumerate(node.input) if name and index not in skip]


def zero_rule(node: onnx.NodeProto, index: GraphIndex) -> str | None:
    """How a removed channel that is zero in the node's input comes out of it (zeros.py)."""
    kind = op_kind(node)
    return None if kind is None or kind.zero is None else kind.zero(node, index)


def filter_layout(node: onnx.NodeProto) -> FilterLayout | None:
    """The node's filter layout when it is a filter producer."""
    kind = op_kind(node)
    return None if kind is None else kind.filters


def filter_count(node: onnx.NodeProto, index: GraphIndex) -> int | None:
    """Output channels of a filter producer with a constant weight."""
    layout = filter_layout(node)
    weight = index.array(node.input[1]) if layout is not None and len(node.input) > 1 else None
    if weight is None or weight.ndim < 2:
        return None
    return layout.count(node, weight)


def mixes_channels(node: onnx.NodeProto, weight_shape: Sequence[int] | None) -> bool:
    """A filter producer whose outputs mix input channels (a depthwise conv does not), given
    its weight's shape (None when unknown)."""
    layout = filter_layout(node)
    return layout is not None and layout.mixes(node, weight_shape)
