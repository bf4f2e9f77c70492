"""Structural slicing: given which channels survive on every tensor, cut the weights,
per-channel constants and shape parameters of each node to match (with the op registry's
slicer for its kind, passes/slicers.py).

Every weight or per-channel constant that is cut is recorded as a slice (axis, kept indices)
under its initializer name; shape parameters (Split sizes, Slice bounds, Reshape targets,
the `group` of convs that lose whole groups) are rewritten but are not slices of data."""

from __future__ import annotations

import numpy as np
import onnx

from onnxwootz.passes.graph_index import GraphIndex, replace_initializer, write_initializer
from onnxwootz.passes.ops import REGISTRY
from onnxwootz.passes.slicers import Mask, Slice


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


SLICERS: dict[str, Slice] = {op: kind.slicer for op, kind in REGISTRY.items() if kind.slicer is not None}
"""The op registry's slicers by op type."""
