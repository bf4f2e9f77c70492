"""Read-only lookups over a ModelProto graph that every pass needs: who produces and who
consumes a tensor, initializers by name."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper


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
        """The value of an initializer (or None when the tensor is computed)."""
        init = self.initializers.get(name)
        return None if init is None else numpy_helper.to_array(init)

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


def replace_initializer(model: onnx.ModelProto, name: str, array: np.ndarray) -> None:
    for index, init in enumerate(model.graph.initializer):
        if init.name == name:
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(array, name))
            return
    model.graph.initializer.append(numpy_helper.from_array(array, name))
