"""The Caffe2-era model zoo graphs that the onnx package ships (onnx/backend/test/data/light),
with their ConstantOfShape weight stand-ins replaced by seeded random initializers, so that
correctness is tested on real graphs nobody here wrote."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

ZOO_NAMES = [
    "bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
    "shufflenet", "squeezenet", "vgg19", "zfnet512",
]


def zoo_path(name: str) -> Path:
    return Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"


def _random_weight(name: str, shape: list[int], rng: np.random.Generator) -> np.ndarray:
    lowered = name.lower()
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))).astype(np.float32)
    if any(key in lowered for key in ("riv", "var", "_s_0", "scale", "_s")):
        return rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
    return (rng.standard_normal(shape) * 0.1).astype(np.float32)


def materialize(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Replace every `ConstantOfShape(shape initializer)` by a random float initializer of that
    shape; also drop initializer-backed graph inputs (IR 3 lists weights as inputs)."""
    rng = np.random.default_rng(seed)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {init.name: init for init in out.graph.initializer}
    keep_nodes = []
    new_inits = []
    used_shapes = set()
    for node in out.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            shape = [int(v) for v in numpy_helper.to_array(inits[node.input[0]])]
            new_inits.append(numpy_helper.from_array(_random_weight(node.output[0], shape, rng), node.output[0]))
            used_shapes.add(node.input[0])
        else:
            keep_nodes.append(node)
    del out.graph.node[:]
    out.graph.node.extend(keep_nodes)
    still_used = {name for node in keep_nodes for name in node.input}
    remaining = [init for init in out.graph.initializer if init.name not in used_shapes or init.name in still_used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(remaining + new_inits)
    init_names = {init.name for init in out.graph.initializer}
    real = [value for value in out.graph.input if value.name not in init_names and value.name not in used_shapes]
    del out.graph.input[:]
    out.graph.input.extend(real)
    out.ir_version = max(out.ir_version, 4)
    return out


def load_zoo(name: str, seed: int = 0) -> onnx.ModelProto:
    """A zoo graph with random weights, as a ModelProto (opset as shipped)."""
    return materialize(onnx.load(str(zoo_path(name))), seed)
