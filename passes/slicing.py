"""Structural slicing per op kind: given which channels survive on every tensor, cut the
weights, per-channel constants and shape parameters of each node to match.

Every weight or per-channel constant that is cut is recorded as a slice (axis, kept indices)
under its initializer name; shape parameters (Split sizes, Slice bounds, Reshape targets,
the `group` of convs that lose whole groups) are rewritten but are not slices of data."""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx

from onnxwootz.passes.graph_index import GraphIndex, attribute, replace_initializer, set_attribute, write_initializer
from onnxwootz.passes.shape_entries import resize_sizes_channel, shape_entry

Mask = np.ndarray  # bool per channel, True = kept


class Slicer:
    """Applies masks to one model in place and records the slices it made."""

    def __init__(self, model: onnx.ModelProto, masks: dict[str, Mask], shapes: dict[str, list[int]],
                 channels_last: set[str] = frozenset()):
        self.model = model
        self.shapes = shapes
        self.channels_last = channels_last  # tensors whose channels are on the last axis
        self.index = GraphIndex(model)
        self.masks = masks
        self.slices: dict[str, list[dict]] = {}

    def mask(self, name: str) -> Mask | None:
        mask = self.masks.get(name)
        return None if mask is None or mask.all() else mask

    def cut(self, name: str, axis: int, mask: Mask | None) -> None:
        """Keep `mask` along `axis` of initializer `name`; a node reading one tensor in two slots
        (a BatchNorm whose scale and variance are one deduplicated tensor) cuts it once. The
        data is cut when every cut is known (run), so a weight is read and written once."""
        if mask is None or not name:
            return
        keep = np.nonzero(mask)[0].tolist()
        done = [entry["keep"] for entry in self.slices.get(name, []) if entry["axis"] == axis]
        if done:
            if done[0] != keep:
                raise ValueError(f"'{name}' is cut two ways on axis {axis}")
            return
        init = self.index.initializers.get(name)
        if init is None:
            raise ValueError(f"cannot slice computed tensor '{name}'")
        if init.dims[axis] != len(mask):
            raise ValueError(f"'{name}' has {init.dims[axis]} entries on axis {axis}, mask has {len(mask)}")
        self.slices.setdefault(name, []).append({"axis": axis, "keep": keep})

    def rewrite(self, name: str, array: np.ndarray) -> None:
        replace_initializer(self.model, name, array)
        if name not in self.index.initializers:  # replaced ones are updated in place; a new one is appended
            self.index.initializers[name] = self.model.graph.initializer[-1]

    def run(self) -> dict[str, list[dict]]:
        for node in self.model.graph.node:
            slicer = SLICERS.get(node.op_type)
            if slicer is not None:
                slicer(node, self)
        for name, entries in self.slices.items():
            array = self.index.array(name)
            for entry in entries:
                array = np.take(array, entry["keep"], axis=entry["axis"])
            write_initializer(self.index.initializers[name], array)
        return self.slices


def _conv(node: onnx.NodeProto, s: Slicer) -> None:
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


def _conv_transpose(node: onnx.NodeProto, s: Slicer) -> None:
    s.cut(node.input[1], 0, s.mask(node.input[0]))
    s.cut(node.input[1], 1, s.mask(node.output[0]))
    if len(node.input) > 2:
        s.cut(node.input[2], 0, s.mask(node.output[0]))


def _gemm(node: onnx.NodeProto, s: Slicer) -> None:
    m_in, m_out = s.mask(node.input[0]), s.mask(node.output[0])
    trans_b = attribute(node, "transB", 0) if node.op_type == "Gemm" else 0
    s.cut(node.input[1], 1 if trans_b else 0, m_in)
    s.cut(node.input[1], 0 if trans_b else 1, m_out)
    if len(node.input) > 2 and node.input[2] and m_out is not None:
        bias = s.index.array(node.input[2])
        if bias is not None and bias.ndim >= 1 and bias.shape[-1] == len(m_out):
            s.cut(node.input[2], bias.ndim - 1, m_out)


def _per_channel_params(first: int, last: int) -> Callable[[onnx.NodeProto, Slicer], None]:
    def slicer(node: onnx.NodeProto, s: Slicer) -> None:
        mask = s.mask(node.output[0])
        for name in node.input[first:last + 1]:
            s.cut(name, 0, mask)

    return slicer


def _broadcast_constants(node: onnx.NodeProto, s: Slicer) -> None:
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


def _split(node: onnx.NodeProto, s: Slicer) -> None:
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


def _slice(node: onnx.NodeProto, s: Slicer) -> None:
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


def _follow_channels(s: Slicer, target: str, position: int, mask: Mask | None) -> None:
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


def _reshape(node: onnx.NodeProto, s: Slicer) -> None:
    _follow_channels(s, node.input[1], 1, s.masks.get(node.output[0]))


def _resize(node: onnx.NodeProto, s: Slicer) -> None:
    """Constant `sizes` hold the channel count (scales do not)."""
    position = resize_sizes_channel(node, len(s.shapes[node.input[0]]))
    if position is not None:
        _follow_channels(s, node.input[3], position, s.masks.get(node.output[0]))


SLICERS: dict[str, Callable[[onnx.NodeProto, Slicer], None]] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "MatMul": _gemm,
    "BatchNormalization": _per_channel_params(1, 4),
    "InstanceNormalization": _per_channel_params(1, 2),
    "Split": _split,
    "Slice": _slice,
    "Reshape": _reshape,
    "Resize": _resize,
    **{op: _broadcast_constants for op in ("Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Pow", "PRelu")},
}
