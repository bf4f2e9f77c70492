"""The mask-equivalence oracle as a pass: zero, in an unpruned canonical model, every slice
a plan says was removed. The pruned model must compute exactly what this masked model does.
A Div's constant divisor is the one exception: its removed entries are set to one, so that a
removed channel stays 0 / 1 = 0 (0 / 0 would make the masked model NaN)."""

from __future__ import annotations

import numpy as np
import onnx

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


def zero_removed(array: np.ndarray, entries: list[dict], fill: float = 0.0,
                 out: np.ndarray | None = None) -> np.ndarray:
    """A copy of `array` with every element that some entry's axis does not keep set to zero
    (or `fill`; an element survives only if it is kept on every sliced axis): one multiply by
    a 0/1 mask over the axes up to the last sliced one (a conv weight: filters x input channels).
    `out` (of the array's shape and dtype): the same values written there, one multiply per
    sliced axis and no mask the size of a 2-D weight, for a caller that reads a large weight
    from its file and keeps only the masked copy."""
    if out is not None:
        source = array
        for entry in entries:
            shape = [1] * array.ndim
            shape[entry["axis"]] = -1
            np.multiply(source, _kept(array, entry).reshape(shape), out=out)
            source = out
        if source is not out:
            out[...] = array
        if fill:
            for entry in entries:
                removed = np.flatnonzero(_kept(array, entry) == 0)
                out[(slice(None),) * entry["axis"] + (removed,)] = fill
        return out
    if not entries or not array.size:
        return array.copy()
    lead = array.shape[:max(entry["axis"] for entry in entries) + 1]
    mask = np.ones(lead, dtype=array.dtype)
    for entry in entries:
        shape = [1] * len(lead)
        shape[entry["axis"]] = -1
        mask = mask * _kept(array, entry).reshape(shape)
    kept = mask.reshape(-1, 1)
    masked = array.reshape(mask.size, -1) * kept
    if fill:
        masked = np.where(kept != 0, masked, np.asarray(fill, dtype=array.dtype))
    return masked.reshape(array.shape)


def _kept(array: np.ndarray, entry: dict) -> np.ndarray:
    """1 where the entry's axis keeps the index, else 0, in the array's dtype."""
    keep_axis = np.zeros(array.shape[entry["axis"]], dtype=array.dtype)
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
