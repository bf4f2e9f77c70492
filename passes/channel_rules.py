"""Per-op channel rules: how the channel identities of a node's inputs flow to its outputs.

Every activation tensor carries `ids`, one atom id per channel (axis 1). A producer (Conv,
ConvTranspose, Gemm, MatMul with a constant weight) mints fresh atoms, one per filter. Rules
pass ids through (per-channel ops), tie them (residual Add, SE gating: the same channel on
both sides must be pruned together), or map them (Concat joins, Split/Slice cut, Flatten
repeats each channel over its H*W features). Anything else is a barrier: its channels are
kept and the reason is recorded. The op registry (ops.py) says which op kind follows which
rule: to support a new op, write its rule here (or reuse one) and add its entry there."""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx

from onnxwootz.core.weightfile import is_reference, row_blocks
from onnxwootz.passes.channel_state import ChannelState
from onnxwootz.passes.graph_index import attribute
from onnxwootz.passes.shape_entries import channel_count_escapes, resize_sizes_channel, shape_entry
from onnxwootz.passes.zeros import removed_are_zero

Rule = Callable[[onnx.NodeProto, ChannelState], None]


def _rank(st: ChannelState, name: str) -> int | None:
    shape = st.shapes.get(name)
    return None if shape is None else len(shape)


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _constant_ints(st: ChannelState, node: onnx.NodeProto, attr: str, input_index: int) -> list[int] | None:
    """An int list given as attribute (old opsets) or as a constant input (new opsets)."""
    value = attribute(node, attr)
    if value is not None:
        return [int(v) for v in value]
    if len(node.input) > input_index and node.input[input_index]:
        array = st.index.array(node.input[input_index])
        return None if array is None else [int(v) for v in array.reshape(-1)]
    return None


L1_BLOCK = 1 << 17
"""Elements of |weight| made at a time (512 KB of float32: small enough that |block| is still in
the cache when it is summed, which makes the L1 norms about a quarter faster than 16 MB blocks)."""


def _l1(st: ChannelState, name: str, weight: np.ndarray, axis: int) -> np.ndarray:
    """Per index of `axis`, the sum of |weight| over the other axes, a block of indices at a
    time: the weight (initializer `name`) may be left in its file (core/weightfile.py), and
    |weight| is never made whole; filters on the first axis of such a weight are read block by
    block (weightfile.row_blocks), the cheapest way through a file. The sums are bitwise those
    of the whole array: each is over one contiguous row of |weight|, as there. A 2-D weight
    summed over its rows (MatMul, Gemm without transB) is summed whole, as before: numpy's
    strided reduction adds in an order that depends on the array's width."""
    if weight.ndim == 2 and axis == 1:
        return np.abs(weight.T).sum(axis=1)
    tensor = st.index.initializers[name]
    if axis == 0 and is_reference(tensor):
        blocks = (block for _, block in row_blocks(tensor, L1_BLOCK))
    else:
        channels = np.moveaxis(weight, axis, 0)
        step = max(1, L1_BLOCK // max(int(np.prod(channels.shape[1:])), 1))
        blocks = (channels[start:start + step] for start in range(0, len(channels), step))
    sums = [np.abs(block).reshape(len(block), -1).sum(axis=1) for block in blocks]
    return np.concatenate(sums) if sums else np.zeros(0, weight.dtype)


def conv(node: onnx.NodeProto, st: ChannelState) -> None:
    weight = st.index.array(node.input[1])
    x = st.ids.get(node.input[0])
    if weight is None or x is None:
        st.barrier(node, "weights are not constant")
        return
    group = attribute(node, "group", 1)
    c_out, per_group_in = weight.shape[0], weight.shape[1]
    out = st.fresh(node, _l1(st, node.input[1], weight, 0))
    st.ids[node.output[0]] = out
    if group == 1:
        return
    per_group_out = c_out // group
    if per_group_in == 1:
        # each group reads one channel (depthwise, or a channel multiplier): a group is its
        # input channel and its filters, removed whole; the group count follows
        for position in range(per_group_out):
            st.tie(x, out[position::per_group_out])
        return
    # groups that mix channels keep their count and lose the same positions (Torch-Pruning's
    # rule): position j of every group is one channel, on the input and on the output
    _tie_across_groups(st, x, group)
    _tie_across_groups(st, out, group)


def _tie_across_groups(st: ChannelState, ids: np.ndarray, group: int) -> None:
    rows = ids.reshape(group, -1)
    st.tie(np.tile(rows[0], group - 1), rows[1:].reshape(-1))


def conv_transpose(node: onnx.NodeProto, st: ChannelState) -> None:
    weight = st.index.array(node.input[1])
    x = st.ids.get(node.input[0])
    if weight is None or x is None or attribute(node, "group", 1) != 1:
        st.barrier(node, "grouped or dynamic ConvTranspose")
        return
    st.ids[node.output[0]] = st.fresh(node, _l1(st, node.input[1], weight, 1))


def gemm(node: onnx.NodeProto, st: ChannelState) -> None:
    weight = st.index.array(node.input[1])
    x = st.ids.get(node.input[0])
    if weight is None or x is None or weight.ndim != 2 or attribute(node, "transA", 0):
        st.barrier(node, "dynamic weights or transposed input")
        return
    trans_b = attribute(node, "transB", 0) if node.op_type == "Gemm" else 0
    if _rank(st, node.input[0]) != 2:
        st.barrier(node, "input is not 2-D")
        return
    st.ids[node.output[0]] = st.fresh(node, _l1(st, node.input[1], weight, 0 if trans_b else 1))  # per output unit


def pass_through(node: onnx.NodeProto, st: ChannelState) -> None:
    x = st.ids.get(node.input[0])
    if x is None:
        return
    st.ids[node.output[0]] = x


def resize(node: onnx.NodeProto, st: ChannelState) -> None:
    x_shape, y_shape = st.shapes.get(node.input[0]), st.shapes.get(node.output[0])
    if not x_shape or not y_shape or len(x_shape) < 2 or x_shape[:2] != y_shape[:2]:
        st.barrier(node, "resizes the channel axis")
        return
    position = resize_sizes_channel(node, len(x_shape))
    if position is not None and st.ids.get(node.input[0]) is not None and \
            not _channel_entry_follows(st, node, node.input[3], position, x_shape[1]):
        st.barrier(node, "sizes' channel entry is computed at run time")
        return
    pass_through(node, st)


def pad(node: onnx.NodeProto, st: ChannelState) -> None:
    pads = _constant_ints(st, node, "pads", 1)
    rank = _rank(st, node.input[0])
    axes = _constant_ints(st, node, "axes", 3) if len(node.input) > 3 else None
    if pads is None or rank is None:
        st.barrier(node, "pads are not constant")
        return
    axes = [_axis(a, rank) for a in axes] if axes else list(range(rank))
    half = len(pads) // 2
    for position, axis in enumerate(axes):
        if axis in (0, 1) and (pads[position] or pads[position + half]):
            st.barrier(node, "pads the channel axis")
            return
    pass_through(node, st)


def reduction(node: onnx.NodeProto, st: ChannelState) -> None:
    rank = _rank(st, node.input[0])
    axes = _constant_ints(st, node, "axes", 1)
    if rank is None or not axes:  # no axes: reduce over everything
        st.barrier(node, "reduces the channel axis")
        return
    axes = [_axis(a, rank) for a in axes]
    if 0 in axes or 1 in axes:
        st.barrier(node, "reduces the channel axis")
        return
    pass_through(node, st)


def elementwise(node: onnx.NodeProto, st: ChannelState) -> None:
    _elementwise(node, st, channels_last=False)


def _elementwise(node: onnx.NodeProto, st: ChannelState, channels_last: bool) -> None:
    """Operands that span the channel axis are tied; constants along it are sliced with it."""
    out_shape = st.shapes.get(node.output[0])
    if not out_shape or len(out_shape) < 2:
        if any(st.ids.get(name) is not None for name in node.input):
            st.barrier(node, "output has no channel axis")
        return
    axis = len(out_shape) - 1 if channels_last else 1
    channels = out_shape[axis]
    full: list[np.ndarray] = []
    for name in node.input:
        if not name:
            continue
        shape = st.shapes.get(name, [])
        offset = len(out_shape) - len(shape)
        size = shape[axis - offset] if 0 <= axis - offset < len(shape) else 1
        ids = st.ids.get(name)
        if size == 1 and channels != 1:
            continue  # broadcast along channels: no tie
        if ids is not None and len(ids) == channels and (name in st.channels_last) == channels_last:
            full.append(ids)
        elif not st.index.is_constant(name):
            st.barrier(node, f"operand '{name}' has unknown channels")
            return
        # constants with a per-channel axis are sliced with the channel (see slicing)
    if not full:
        return
    for other in full[1:]:
        st.tie(full[0], other)
    st.ids[node.output[0]] = full[0]
    if channels_last:
        st.channels_last.add(node.output[0])


def concat(node: onnx.NodeProto, st: ChannelState) -> None:
    rank = _rank(st, node.output[0])
    parts = [st.ids.get(name) for name in node.input]
    if rank is None or any(p is None for p in parts):
        st.barrier(node, "concatenates tensors without channel identities")
        return
    if _axis(attribute(node, "axis", 0), rank) == 1:
        st.ids[node.output[0]] = np.concatenate(parts)
    elif _axis(attribute(node, "axis", 0), rank) == 0:
        st.barrier(node, "concatenates along the batch axis")
    else:
        for other in parts[1:]:
            st.tie(parts[0], other)
        st.ids[node.output[0]] = parts[0]


def split(node: onnx.NodeProto, st: ChannelState) -> None:
    x = st.ids.get(node.input[0])
    rank = _rank(st, node.input[0])
    if x is None or rank is None:
        return
    if _axis(attribute(node, "axis", 0), rank) != 1:
        for name in node.output:
            st.ids[name] = x
        return
    start = 0
    for name in node.output:
        size = st.shapes[name][1]
        st.ids[name] = x[start:start + size]
        st.split_outputs.append(name)
        start += size


def slice_(node: onnx.NodeProto, st: ChannelState) -> None:
    x = st.ids.get(node.input[0])
    rank = _rank(st, node.input[0])
    if x is None or rank is None:
        return
    starts = _constant_ints(st, node, "starts", 1)
    ends = _constant_ints(st, node, "ends", 2)
    axes = _constant_ints(st, node, "axes", 3) or list(range(len(starts or [])))
    steps = _constant_ints(st, node, "steps", 4) or [1] * len(axes)
    if starts is None or ends is None:
        st.barrier(node, "slice bounds are not constant")
        return
    axes = [_axis(a, rank) for a in axes]
    if 0 in axes:
        st.barrier(node, "slices the batch axis")
        return
    if 1 not in axes:
        pass_through(node, st)
        return
    position = axes.index(1)
    if steps[position] != 1:
        st.barrier(node, "strided slice of the channel axis")
        return
    start, stop, _ = slice(starts[position], ends[position]).indices(len(x))
    st.ids[node.output[0]] = x[start:stop]
    st.split_outputs.append(node.output[0])


def gather(node: onnx.NodeProto, st: ChannelState) -> None:
    """Gather on the channel axis with constant indices that pick each channel at most once (a
    channel shuffle, canonicalized): the output's channels are those channels in that order.
    Along a spatial axis the channels pass through."""
    x = st.ids.get(node.input[0])
    rank = _rank(st, node.input[0])
    if x is None or rank is None:
        return
    axis = _axis(attribute(node, "axis", 0), rank)
    indices = st.index.array(node.input[1])
    if axis >= 2 and indices is not None:
        pass_through(node, st)
        return
    if axis != 1 or indices is None or indices.ndim != 1:
        st.barrier(node, "gathers along the batch or channel axis with computed or non-1-D indices")
        return
    picked = np.where(indices < 0, indices + len(x), indices)
    if len(np.unique(picked)) != len(picked):
        st.barrier(node, "gathers a channel more than once")
        return
    st.ids[node.output[0]] = x[picked]


def _flatten_ids(st: ChannelState, name: str, x: np.ndarray) -> np.ndarray:
    shape = st.shapes[name]
    return np.repeat(x, int(np.prod(shape[2:])) if len(shape) > 2 else 1)


def flatten(node: onnx.NodeProto, st: ChannelState) -> None:
    x = st.ids.get(node.input[0])
    if x is None:
        return
    rank = _rank(st, node.input[0])
    if rank is None or _axis(attribute(node, "axis", 1), rank) != 1:
        st.barrier(node, "flattens across the batch or channel axis")
        return
    st.ids[node.output[0]] = _flatten_ids(st, node.input[0], x)


def reshape(node: onnx.NodeProto, st: ChannelState) -> None:
    x = st.ids.get(node.input[0])
    if x is None:
        return
    before, after = st.shapes.get(node.input[0]), st.shapes.get(node.output[0])
    if not before or not after or len(before) < 2 or len(after) < 2 or before[0] != after[0]:
        st.barrier(node, "reshape mixes the batch axis")
        return
    flattens = len(after) == 2 and after[1] == int(np.prod(before[1:]))
    if not flattens and (before[1] != after[1] or int(np.prod(before[2:])) != int(np.prod(after[2:]))):
        st.barrier(node, "reshape regroups the channel axis")
        return
    if not _channel_entry_follows(st, node, node.input[1], 1, after[1]):
        st.barrier(node, "reshape target's channel size is computed at run time")
        return
    if flattens:
        st.ids[node.output[0]] = _flatten_ids(st, node.input[0], x)
        st.flatten_reshapes.add(node.name)
    else:
        pass_through(node, st)


def _channel_entry_follows(st: ChannelState, node: onnx.NodeProto, target: str, position: int, channels: int) -> bool:
    """Whether entry `position` of the shape tensor `target` (a Reshape target, a Resize's
    sizes), the one that holds the channel count, can follow the pruned channels: a constant
    on the target's path (rewritten by slicing), 0 or -1 (a Reshape derives it), or the channel
    count of a tensor with the input's very channels, read at run time by Shape."""
    entry = shape_entry(st.index, st.shapes, target, position)
    if entry is None:
        return False
    if not entry.constant:
        x, read = st.ids[node.input[0]], st.ids.get(entry.tensor)
        return entry.position == 1 and len(x) == channels and read is not None and np.array_equal(read, x)
    value = int(st.index.array(entry.tensor).reshape(-1)[entry.position])
    return value == channels or (node.op_type == "Reshape" and value in (0, -1))


def transpose(node: onnx.NodeProto, st: ChannelState) -> None:
    """Keeps the channels in place, or moves them to the last axis (NCHW -> NHWC, where the
    registry's channels-last rules take over) and back."""
    perm = attribute(node, "perm")
    rank = _rank(st, node.input[0])
    if perm is not None and list(perm[:2]) == [0, 1]:
        pass_through(node, st)
    elif st.ids.get(node.input[0]) is None:
        return
    elif perm is not None and rank is not None and list(perm) == [0, *range(2, rank), 1]:
        pass_through(node, st)
        st.channels_last.add(node.output[0])
    else:
        st.barrier(node, "transpose moves the channel axis")


def channels_last_transpose(node: onnx.NodeProto, st: ChannelState) -> None:
    perm = attribute(node, "perm")
    rank = _rank(st, node.input[0])
    if perm is not None and rank is not None and list(perm) == [0, rank - 1, *range(1, rank - 1)]:
        pass_through(node, st)  # back to channels first
    elif perm is not None and rank is not None and perm[0] == 0 and perm[-1] == rank - 1:
        pass_through(node, st)
        st.channels_last.add(node.output[0])
    else:
        st.barrier(node, "transpose moves the channels of a channels-last tensor")


def channels_last_unary(node: onnx.NodeProto, st: ChannelState) -> None:
    pass_through(node, st)
    st.channels_last.add(node.output[0])


def channels_last_elementwise(node: onnx.NodeProto, st: ChannelState) -> None:
    _elementwise(node, st, channels_last=True)


def channels_last_matmul(node: onnx.NodeProto, st: ChannelState) -> None:
    """x[..., C] @ W[C, N] (a Linear on an NHWC tensor): contracts the channels, mints N new
    filters on the last axis."""
    weight = st.index.array(node.input[1])
    if weight is None or weight.ndim != 2 or node.input[0] not in st.channels_last:
        st.barrier(node, "multiplies a channels-last tensor by a computed matrix")
        return
    st.ids[node.output[0]] = st.fresh(node, _l1(st, node.input[1], weight, 1))
    st.channels_last.add(node.output[0])


def squeeze_unsqueeze(node: onnx.NodeProto, st: ChannelState) -> None:
    if st.ids.get(node.input[0]) is None:
        return
    ref = node.output[0] if node.op_type == "Unsqueeze" else node.input[0]
    rank = _rank(st, ref)
    axes = _constant_ints(st, node, "axes", 1)
    if rank is None or axes is None or any(_axis(a, rank) in (0, 1) for a in axes):
        st.barrier(node, f"{node.op_type} touches the batch or channel axis")
        return
    pass_through(node, st)


def shape(node: onnx.NodeProto, st: ChannelState) -> None:
    """Shape reads only the tensor's shape: nothing to tie, nothing flows on. A Reshape target
    or Resize sizes that take the channel count from it are checked by their rules; used in any
    other way the count is a value that pruning would change, so the channels are kept."""
    if st.ids.get(node.input[0]) is not None and channel_count_escapes(st.index, st.shapes, node):
        st.barrier(node, "the channel count it reads is used as a value")


def size(node: onnx.NodeProto, st: ChannelState) -> None:
    """Size is the element count, channels included: pruning would change the value it gives
    whatever reads it, and nothing checks what does."""
    if st.ids.get(node.input[0]) is not None:
        st.barrier(node, "its element count counts the channels")


def layer_norm(node: onnx.NodeProto, st: ChannelState) -> None:
    """LayerNormalization of a [N, C] tensor over its channels (a classifier head's)."""
    if _rank(st, node.input[0]) != 2:
        st.barrier(node, "normalizes over more than the channels")
    elif _layer_norm_passes(node, st):
        pass_through(node, st)


def channels_last_layer_norm(node: onnx.NodeProto, st: ChannelState) -> None:
    """LayerNormalization over a channels-last tensor's channels (ConvNeXt)."""
    if _layer_norm_passes(node, st):
        channels_last_unary(node, st)


def _layer_norm_passes(node: onnx.NodeProto, st: ChannelState) -> bool:
    """Whether a LayerNormalization over the last axis lets its channels through: its statistics
    stay those of all C channels when the removed ones were zero in the masked original
    (slicers.layer_norm pads them back as zeros). Removed channels that may be non-zero there
    would change the statistics: a barrier, named."""
    rank = _rank(st, node.input[0])
    channels = (st.shapes.get(node.input[0]) or [0])[-1]
    params = [st.index.array(name) for name in node.input[1:3] if name]
    if rank is None or _axis(attribute(node, "axis", -1), rank) != rank - 1:
        st.barrier(node, "normalizes over more than the channels")
    elif any(p is None or p.size != channels or p.shape[-1] != channels for p in params):
        st.barrier(node, "its scale or bias is computed, or not one value per channel")
    elif any(name and st.index.consumers.get(name) for name in node.output[1:]):
        st.barrier(node, "its mean or inverse deviation is read")
    elif not removed_are_zero(st, node.input[0]):
        st.barrier(node, "normalizes over the channels, whose removed values may be non-zero "
                         "(pruning would change its statistics)")
    else:
        return True
    return False
