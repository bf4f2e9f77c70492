"""The mask-equivalence oracle as a pass: zero, in an unpruned canonical model, every slice
a plan says was removed. The pruned model must compute exactly what this masked model does."""

from __future__ import annotations

import numpy as np
import onnx

from onnxwootz.passes.base import Pass, PassResult
from onnxwootz.passes.canonicalize import shared_origins
from onnxwootz.passes.graph_index import GraphIndex, replace_initializer


class ZeroRemoved(Pass):
    def __init__(self, slices: dict[str, list[dict]]):
        self.slices = slices

    def call(self, model: onnx.ModelProto) -> PassResult:
        index = GraphIndex(model)
        by_origin: dict[str, list[str]] = {}
        for private, origin in shared_origins(model).items():
            by_origin.setdefault(origin, []).append(private)
        for key, entries in self.slices.items():
            targets = [key] if key in index.initializers else by_origin.get(key, [])
            if not targets:
                raise KeyError(f"plan names tensor '{key}' that the model does not have")
            for name in targets:
                array = index.array(name)
                dropped = np.ones(array.shape, dtype=bool)
                # an element survives only if it is kept on every sliced axis
                for entry in entries:
                    keep_axis = np.zeros(array.shape[entry["axis"]], dtype=bool)
                    keep_axis[entry["keep"]] = True
                    shape = [1] * array.ndim
                    shape[entry["axis"]] = -1
                    dropped &= keep_axis.reshape(shape)
                replace_initializer(model, name, np.where(dropped, array, 0).astype(array.dtype))
        return PassResult(model, bool(self.slices))
