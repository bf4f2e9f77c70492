"""The mask-equivalence oracle as a pass: zero, in an unpruned canonical model, every slice
a plan says was removed. The pruned model must compute exactly what this masked model does.
A Div's constant divisor is the one exception: its removed entries are set to one, so that a
removed channel stays 0 / 1 = 0 (0 / 0 would make the masked model NaN)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from onnxwootz.core.weightfile import row_blocks
from onnxwootz.passes.base import Pass, PassResult
from onnxwootz.passes.canonicalize import shared_origins
from onnxwootz.passes.graph_index import GraphIndex, replace_initializer


def plan_targets(model: onnx.ModelProto, slices: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The plan's entries per initializer of `model` (a key naming a shared tensor of the input
    model applies to each of its private copies)."""
    names = {init.name for init in model.graph.initializer}
    by_origin: dict[str, list[str]] = {}
    for private, origin in shared_origins(model).items():
        by_origin.setdefault(origin, []).append(private)
    targets: dict[str, list[dict]] = {}
    for key, entries in slices.items():
        found = [key] if key in names else by_origin.get(key, [])
        if not found:
            raise KeyError(f"plan names tensor '{key}' that the model does not have")
        for name in found:
            targets[name] = entries
    return targets


def divisors(model: onnx.ModelProto) -> set[str]:
    """The tensors read as a Div's divisor (their removed entries are masked to one)."""
    return {node.input[1] for node in model.graph.node if node.op_type == "Div" and len(node.input) > 1}


def zero_removed(array: np.ndarray, entries: list[dict], fill: float = 0.0) -> np.ndarray:
    """A copy of `array` with every element that some entry's axis does not keep set to zero
    (or `fill`; an element survives only if it is kept on every sliced axis): one multiply by
    a 0/1 mask over the axes up to the last sliced one (a conv weight: filters x input channels)."""
    if not entries or not array.size:
        return array.copy()
    lead = array.shape[:max(entry["axis"] for entry in entries) + 1]
    mask = np.ones(lead, dtype=array.dtype)
    for entry in entries:
        shape = [1] * len(lead)
        shape[entry["axis"]] = -1
        mask = mask * _kept(array.shape[entry["axis"]], array.dtype, entry).reshape(shape)
    kept = mask.reshape(-1, 1)
    masked = array.reshape(mask.size, -1) * kept
    if fill:
        masked = np.where(kept != 0, masked, np.asarray(fill, dtype=array.dtype))
    return masked.reshape(array.shape)


BLOCK = 1 << 17
"""Elements of a weight masked at a time by masked_copy (512 KB of float32: one block in the cache)."""


def masked_copy(tensor: onnx.TensorProto, entries: list[dict], fill: float = 0.0) -> np.ndarray:
    """zero_removed of an initializer's values, for a caller that reads a large weight from its
    file and keeps only the masked copy: the values are read into the copy a block of rows at a
    time (weightfile.row_blocks) and each block is masked while it is in the cache, one
    multiply per sliced axis and no mask the size of a 2-D weight."""
    shape = tuple(tensor.dims)
    out = np.empty(shape, helper.tensor_dtype_to_np_dtype(tensor.data_type))
    factors = []
    for entry in entries:
        broadcast = [1] * len(shape)
        broadcast[entry["axis"]] = -1
        factors.append((entry["axis"], _kept(shape[entry["axis"]], out.dtype, entry).reshape(broadcast)))
    for rows, block in row_blocks(tensor, BLOCK, out=out):
        for axis, factor in factors:
            np.multiply(block, factor[rows] if axis == 0 else factor, out=block)
        if fill:
            for axis, factor in factors:
                removed = np.flatnonzero((factor[rows] if axis == 0 else factor).reshape(-1) == 0)
                block[(slice(None),) * axis + (removed,)] = fill
    return out


def _kept(size: int, dtype: np.dtype, entry: dict) -> np.ndarray:
    """1 where the entry's axis (of `size`) keeps the index, else 0, in `dtype`."""
    keep_axis = np.zeros(size, dtype=dtype)
    keep_axis[entry["keep"]] = 1
    return keep_axis


class ZeroRemoved(Pass):
    def __init__(self, slices: dict[str, list[dict]]):
        self.slices = slices

    def call(self, model: onnx.ModelProto) -> PassResult:
        index = GraphIndex(model)
        ones = divisors(model)
        for name, entries in plan_targets(model, self.slices).items():
            replace_initializer(model, name, zero_removed(index.array(name), entries, float(name in ones)))
        return PassResult(model, bool(self.slices))
