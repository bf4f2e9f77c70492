"""Read-only lookups over a ModelProto graph that every pass needs: who produces and who
consumes a tensor, initializers by name."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper

from onnxwootz.core.weightfile import read_array


class GraphIndex:
    """Producer/consumer maps of a graph, built once per analysis."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.graph = model.graph
        self.initializers: dict[str, onnx.TensorProto] = {init.name: init for init in self.graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.graph.node:
            for name in node.output:
                if name:
                    self.producer[name] = node
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
        self.graph_inputs = [v.name for v in self.graph.input if v.name not in self.initializers]
        self.graph_outputs = [v.name for v in self.graph.output]

    def array(self, name: str) -> np.ndarray | None:
        """The value of an initializer (or None when the tensor is computed), read from its file
        when it is a reference (core/weightfile.py)."""
        init = self.initializers.get(name)
        return None if init is None else read_array(init)

    def is_constant(self, name: str) -> bool:
        return name in self.initializers


def attribute(node: onnx.NodeProto, name: str, default=None):
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def set_attribute(node: onnx.NodeProto, name: str, value) -> None:
    for index, attr in enumerate(node.attribute):
        if attr.name == name:
            del node.attribute[index]
            break
    node.attribute.append(onnx.helper.make_attribute(name, value))


def write_initializer(tensor: onnx.TensorProto, array: np.ndarray) -> None:
    """Make `tensor` (keeping its name) hold `array`, written into it directly: one copy of the
    data where building a TensorProto and copying it in would make two."""
    name = tensor.name
    if array.dtype.kind not in "biuf" or array.dtype.byteorder == ">":  # strings, bfloat16 and the like
        tensor.CopyFrom(numpy_helper.from_array(array, name))
        return
    tensor.Clear()
    tensor.dims.extend(array.shape)
    tensor.name = name
    tensor.data_type = onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
    tensor.raw_data = np.ascontiguousarray(array).tobytes()


def replace_initializer(model: onnx.ModelProto, name: str, array: np.ndarray) -> None:
    for init in model.graph.initializer:
        if init.name == name:
            write_initializer(init, array)
            return
    model.graph.initializer.append(numpy_helper.from_array(array, name))
