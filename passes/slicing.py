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
        self.replaced: dict[int, list[onnx.NodeProto]] = {}  # by the position of the node they replace
        self.position = 0  # of the node being sliced
        self.names: set[str] | None = None  # every name in the model, made when first needed

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

    def fresh_name(self, base: str) -> str:
        if self.names is None:
            graph = self.model.graph
            self.names = {name for node in graph.node for name in (node.name, *node.input, *node.output)}
            self.names |= {value.name for value in (*graph.input, *graph.output, *graph.initializer)}
        name, number = base, 0
        while name in self.names:
            number += 1
            name = f"{base}_{number}"
        self.names.add(name)
        return name

    def replace(self, node: onnx.NodeProto, nodes: list[onnx.NodeProto]) -> None:
        if self.model.graph.node[self.position] != node:
            raise ValueError(f"only the node being sliced can be replaced, not '{node.name}'")
        self.replaced[self.position] = nodes

    def run(self) -> dict[str, list[dict]]:
        for self.position, node in enumerate(self.model.graph.node):
            slicer = SLICERS.get(node.op_type)
            if slicer is not None:
                slicer(node, self)
        for name, entries in self.slices.items():
            array = self.index.array(name)
            for entry in entries:
                array = np.take(array, entry["keep"], axis=entry["axis"])
            write_initializer(self.index.initializers[name], array)
        return self.slices

    def replace_nodes(self) -> None:
        """Put in the nodes slicers asked for (replace). Separate from run, so that the plan
        names the input model's reader of each cut tensor first, not a node added to read it."""
        if not self.replaced:
            return
        nodes = []
        for position, node in enumerate(self.model.graph.node):
            nodes += self.replaced.get(position, [node])  # still valid once the list is cleared, as in canonicalize
        del self.model.graph.node[:]
        self.model.graph.node.extend(nodes)
        self.replaced.clear()


SLICERS: dict[str, Slice] = {op: kind.slicer for op, kind in REGISTRY.items() if kind.slicer is not None}
"""The op registry's slicers by op type."""
