"""Structural slicing per op kind: given which channels survive on every tensor, cut the
weights, per-channel constants and shape parameters of one node to match. The op registry
(ops.py) says which op kind uses which of these; slicing.Slicer runs them over a model."""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np
import onnx

from onnxwootz.passes.graph_index import GraphIndex, attribute, set_attribute
from onnxwootz.passes.shape_entries import resize_sizes_channel, shape_entry

Mask = np.ndarray  # bool per channel, True = kept


class Cuts(Protocol):
    """What a slicer sees of the slicing run (slicing.Slicer implements it)."""

    masks: dict[str, Mask]
    shapes: dict[str, list[int]]
    channels_last: set[str]
    index: GraphIndex

    def mask(self, name: str) -> Mask | None:
        """The mask of tensor `name`, None when it keeps every channel (or has none)."""

    def cut(self, name: str, axis: int, mask: Mask | None) -> None:
        """Keep `mask` along `axis` of initializer `name` and record the slice."""

    def rewrite(self, name: str, array: np.ndarray) -> None:
        """Set initializer `name` (a shape parameter, not a slice of data) to `array`."""

    def fresh_name(self, base: str) -> str:
        """A tensor or node name the model does not use yet."""

    def replace(self, node: onnx.NodeProto, nodes: list[onnx.NodeProto]) -> None:
        """Put `nodes` in the place of `node`, the node being sliced, once every cut is made."""


Slice = Callable[[onnx.NodeProto, Cuts], None]


def conv(node: onnx.NodeProto, s: Cuts) -> None:
    m_in, m_out = s.mask(node.input[0]), s.mask(node.output[0])
    group = attribute(node, "group", 1)
    s.cut(node.input[1], 0, m_out)
    if group == 1:
        s.cut(node.input[1], 1, m_in)
    elif m_in is not None and len(m_in) == group:  # one input channel per group: whole groups went
        set_attribute(node, "group", int(m_in.sum()))
    elif m_in is not None:  # the same positions went from every group (the analysis tied them)
        s.cut(node.input[1], 1, m_in.reshape(group, -1)[0])
    if len(node.input) > 2:
        s.cut(node.input[2], 0, m_out)


def conv_transpose(node: onnx.NodeProto, s: Cuts) -> None:
    s.cut(node.input[1], 0, s.mask(node.input[0]))
    s.cut(node.input[1], 1, s.mask(node.output[0]))
    if len(node.input) > 2:
        s.cut(node.input[2], 0, s.mask(node.output[0]))


def gemm(node: onnx.NodeProto, s: Cuts) -> None:
    m_in, m_out = s.mask(node.input[0]), s.mask(node.output[0])
    trans_b = attribute(node, "transB", 0) if node.op_type == "Gemm" else 0
    s.cut(node.input[1], 1 if trans_b else 0, m_in)
    s.cut(node.input[1], 0 if trans_b else 1, m_out)
    if len(node.input) > 2 and node.input[2] and m_out is not None:
        bias = s.index.array(node.input[2])
        if bias is not None and bias.ndim >= 1 and bias.shape[-1] == len(m_out):
            s.cut(node.input[2], bias.ndim - 1, m_out)


def per_channel_params(first: int, last: int) -> Slice:
    def slicer(node: onnx.NodeProto, s: Cuts) -> None:
        mask = s.mask(node.output[0])
        for name in node.input[first:last + 1]:
            s.cut(name, 0, mask)

    return slicer


def broadcast_constants(node: onnx.NodeProto, s: Cuts) -> None:
    """Elementwise ops: constants with a per-channel axis follow the output's channels."""
    mask = s.mask(node.output[0])
    if mask is None:
        return
    rank = len(s.shapes[node.output[0]])
    channel_axis = rank - 1 if node.output[0] in s.channels_last else 1
    for name in node.input:
        array = s.index.array(name)
        if array is None:
            continue
        axis = channel_axis - (rank - array.ndim)
        if 0 <= axis < array.ndim and array.shape[axis] == len(mask) and len(mask) > 1:
            s.cut(name, axis, mask)


def split(node: onnx.NodeProto, s: Cuts) -> None:
    rank = len(s.shapes[node.input[0]])
    if attribute(node, "axis", 0) not in (1, 1 - rank):
        return  # along another axis every part has all the input's channels: the sizes stay
    masks = [s.masks.get(name) for name in node.output]
    if all(m is None or m.all() for m in masks) or any(m is None for m in masks):
        return
    sizes = np.array([int(m.sum()) for m in masks], dtype=np.int64)
    if len(node.input) > 1 and node.input[1]:
        s.rewrite(node.input[1], sizes)
    elif attribute(node, "split") is not None:
        set_attribute(node, "split", sizes.tolist())
    else:  # num_outputs (opset 18) or implicit equal split: make the sizes explicit
        for index, attr in enumerate(node.attribute):
            if attr.name == "num_outputs":
                del node.attribute[index]
                break
        name = f"{node.name}_split_sizes"
        s.rewrite(name, sizes)
        while len(node.input) < 2:
            node.input.append("")
        node.input[1] = name


def slice_(node: onnx.NodeProto, s: Cuts) -> None:
    mask = s.masks.get(node.input[0])
    if mask is None or mask.all() or node.output[0] not in s.masks:
        return
    axes_name = node.input[3] if len(node.input) > 3 else ""
    starts, ends = s.index.array(node.input[1]), s.index.array(node.input[2])
    axes = s.index.array(axes_name) if axes_name else np.arange(len(starts))
    position = [i for i, a in enumerate(axes.tolist()) if a in (1, 1 - len(s.shapes[node.input[0]]))]
    if not position:
        return
    i = position[0]
    start, stop, _ = slice(int(starts[i]), int(ends[i])).indices(len(mask))
    new_starts, new_ends = starts.copy(), ends.copy()
    new_starts[i] = int(mask[:start].sum())
    new_ends[i] = int(mask[:stop].sum())
    s.rewrite(node.input[1], new_starts)
    s.rewrite(node.input[2], new_ends)


def _follow_channels(s: Cuts, target: str, position: int, mask: Mask | None) -> None:
    """A constant entry `position` of shape tensor `target` (perhaps inside run-time shape
    arithmetic) that holds the channel count becomes the kept channel count; the analysis made
    a node whose entry cannot follow a barrier."""
    if mask is None or mask.all():
        return
    entry = shape_entry(s.index, s.shapes, target, position)
    if entry is None or not entry.constant:
        return  # read from the pruned tensor's shape at run time
    array = s.index.array(entry.tensor)
    if int(array.reshape(-1)[entry.position]) in (0, -1):
        return
    new = array.copy()
    new.reshape(-1)[entry.position] = int(mask.sum())
    s.rewrite(entry.tensor, new)


def gather(node: onnx.NodeProto, s: Cuts) -> None:
    """A channel-axis Gather (the analysis accepted constant 1-D indices there): the kept
    outputs' indices, renumbered as positions among the kept inputs."""
    m_in, m_out = s.mask(node.input[0]), s.mask(node.output[0])
    if m_in is None and m_out is None:
        return
    indices = s.index.array(node.input[1])
    if len(s.shapes[node.input[0]]) < 2 or attribute(node, "axis", 0) % len(s.shapes[node.input[0]]) != 1:
        return
    full = len(s.masks[node.input[0]])
    picked = np.where(indices < 0, indices + full, indices)
    kept_out = picked if m_out is None else picked[m_out]
    position = np.cumsum(s.masks[node.input[0]]) - 1
    s.rewrite(node.input[1], position[kept_out].astype(indices.dtype))


def reshape(node: onnx.NodeProto, s: Cuts) -> None:
    _follow_channels(s, node.input[1], 1, s.masks.get(node.output[0]))


def resize(node: onnx.NodeProto, s: Cuts) -> None:
    """Constant `sizes` hold the channel count (scales do not)."""
    position = resize_sizes_channel(node, len(s.shapes[node.input[0]]))
    if position is not None:
        _follow_channels(s, node.input[3], position, s.masks.get(node.output[0]))


def layer_norm(node: onnx.NodeProto, s: Cuts) -> None:
    """LayerNormalization over the channels (the last axis; the analysis lets channels through
    only where the removed ones were zero in the masked original): its scale and bias are cut,
    and the pruned node normalizes the kept channels padded back with as many zeros as went, so
    its mean and variance are still those over all C channels, then keeps the kept ones. Exact,
    at the cost of normalizing C channels instead of C' (no multiply-accumulates)."""
    mask = s.mask(node.input[0])
    if mask is None:
        return
    gone, kept = int((~mask).sum()), int(mask.sum())
    wide = onnx.NodeProto.FromString(node.SerializeToString())
    pads = []
    for slot, name in enumerate(node.input[:3]):
        if not name:
            continue
        rank = len(s.shapes[name]) if slot == 0 else len(s.index.initializers[name].dims)
        if slot:
            s.cut(name, rank - 1, mask)
        amounts = s.fresh_name(f"{node.name}_pads_{slot}")
        s.rewrite(amounts, np.array([0] * (2 * rank - 1) + [gone], dtype=np.int64))
        wide.input[slot] = s.fresh_name(f"{name}_padded")
        pads.append(onnx.helper.make_node("Pad", [name, amounts], [wide.input[slot]],
                                          name=s.fresh_name(f"{node.name}_pad_{slot}")))
    wide.output[0] = s.fresh_name(f"{node.output[0]}_wide")
    bounds = [s.fresh_name(f"{node.name}_keep_{part}") for part in ("starts", "ends", "axes")]
    for bound, value in zip(bounds, (0, kept, -1)):
        s.rewrite(bound, np.array([value], dtype=np.int64))
    keep = onnx.helper.make_node("Slice", [wide.output[0], *bounds], [node.output[0]],
                                 name=s.fresh_name(f"{node.name}_keep"))
    s.replace(node, [*pads, wide, keep])
