"""Which removed channels are zero in the masked original (every removed slice zeroed).

A LayerNormalization over the channels prunes exactly only when the channels it loses were zero
in the masked original: then its statistics over all C channels are those of the kept ones
plus C - C' zeros, which the pruned graph reproduces by padding (slicers.layer_norm). A removed
channel is zero straight out of a filter producer (its filters and bias are zeroed) and stays
zero through ops that map zero to zero; each op kind declares how (ops.Op.zero) with one of the
rules below."""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx

from onnxwootz.passes.channel_state import ChannelState
from onnxwootz.passes.graph_index import GraphIndex, attribute

ALWAYS = "always"  # zero whatever its input: a filter producer, a norm whose per-channel params are zeroed
INPUTS = "inputs"  # zero where every operand spanning the channels is (a unary op with f(0) = 0, Add)
ANY = "any"  # zero where one operand spanning the channels is (Mul)
FIRST = "first"  # zero where its first operand is (Div's numerator, PRelu)

ZeroRule = Callable[[onnx.NodeProto, GraphIndex], str | None]
"""Given a node, one of the modes above, or None: a removed channel may be non-zero after it."""


def rule(mode: str) -> ZeroRule:
    return lambda node, index: mode


def clip(node: onnx.NodeProto, index: GraphIndex) -> str | None:
    """Clip keeps a zero when its bounds hold zero between them."""
    low = attribute(node, "min") if len(node.input) < 2 else _scalar(index, node, 1)
    high = attribute(node, "max") if len(node.input) < 2 else _scalar(index, node, 2)
    if low is False or high is False:
        return None
    return INPUTS if (low is None or low <= 0.0) and (high is None or high >= 0.0) else None


def pad(node: onnx.NodeProto, index: GraphIndex) -> str | None:
    """Padding a zero channel keeps it zero unless a non-zero constant is padded in."""
    if attribute(node, "mode", b"constant") not in (b"constant", "constant"):
        return INPUTS
    value = attribute(node, "value") if len(node.input) < 3 else _scalar(index, node, 2)
    return INPUTS if value in (None, 0.0) else None


def _scalar(index: GraphIndex, node: onnx.NodeProto, slot: int) -> float | None | bool:
    """A constant scalar input, None when absent, False when computed."""
    if len(node.input) <= slot or not node.input[slot]:
        return None
    array = index.array(node.input[slot])
    return False if array is None or array.size != 1 else float(array.reshape(-1)[0])


def removed_are_zero(st: ChannelState, name: str) -> bool:
    """Whether tensor `name`'s removed channels are zero everywhere in the masked original.
    Walks producers (without recursion: a stream may pass hundreds of nodes), each tensor once."""
    known = st.zero_removed
    stack = [name]
    while stack:
        tensor = stack[-1]
        if tensor in known:
            stack.pop()
            continue
        terms = _terms(st, tensor)
        if isinstance(terms, bool):
            known[tensor] = terms
            stack.pop()
            continue
        mode, operands = terms
        pending = [operand for operand in operands if operand not in known]
        if pending:
            stack.extend(pending)
            continue
        values = [known[operand] for operand in operands]
        known[tensor] = any(values) if mode == ANY else bool(values) and all(values)
        stack.pop()
    return known[name]


def _terms(st: ChannelState, tensor: str) -> bool | tuple[str, list[str]]:
    """The answer for `tensor` when its producer decides it alone, else the mode and the
    computed operands it depends on."""
    node = st.index.producer.get(tensor)
    mode = st.zero_rule(node) if node is not None else None
    if mode is None:
        return False
    if mode == ALWAYS:
        return True
    operands = [name for name in st.data_inputs(node) if name]
    if mode == FIRST:
        operands = operands[:1]
    computed, constants = [], []
    for operand in operands:
        (constants if st.index.is_constant(operand) else computed).append(operand)
    zero_constants = [_constant_zero_where_removed(st, node, operand) for operand in constants]
    if not all(_spans_channels(st, node, operand) for operand in computed):
        if mode != ANY:
            return False  # a computed operand broadcast along the channels (a mean) fills them
        computed = [operand for operand in computed if _spans_channels(st, node, operand)]
    if mode == ANY:
        if any(zero_constants):
            return True
        return (ANY, computed) if computed else False
    if not all(zero_constants):
        return False
    return (INPUTS, computed) if computed else False


def _channel_axis(st: ChannelState, node: onnx.NodeProto) -> tuple[int, int] | None:
    shape = st.shapes.get(node.output[0])
    if not shape or len(shape) < 2:
        return None
    axis = len(shape) - 1 if node.output[0] in st.channels_last else 1
    return axis, len(shape)


def _spans_channels(st: ChannelState, node: onnx.NodeProto, operand: str) -> bool:
    """Whether the computed `operand` carries the output's channels: as many as the output (a
    tied operand of an elementwise op) or some of the very same ones (a Concat part, a Slice's
    input). An operand broadcast along the channels (a mean over them) does neither."""
    ids, out = st.ids.get(operand), st.ids.get(node.output[0])
    if ids is None or out is None:
        return False
    return len(ids) == len(out) or bool(np.intersect1d(ids, out).size)


def _constant_zero_where_removed(st: ChannelState, node: onnx.NodeProto, name: str) -> bool:
    """A constant operand is zero in the removed channels when it is all zeros, or when it
    holds one value per channel along the output's channel axis (slicing cuts it, the masked
    original zeroes the removed entries)."""
    array = st.index.array(name)
    if array is None:
        return False
    if not np.any(array):
        return True
    where = _channel_axis(st, node)
    if where is None:
        return False
    axis, rank = where
    position = axis - (rank - array.ndim)
    channels = st.shapes[node.output[0]][axis]
    return channels > 1 and 0 <= position < array.ndim and array.shape[position] == channels
