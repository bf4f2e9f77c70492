"""Block slicing: the span of a model between a tuning block's entry and exit tensors as a
standalone ModelProto (onnx-graphsurgeon does the cut and the dead-node cleanup)."""

from __future__ import annotations

import numpy as np
import onnx

from onnxwootz.core.errors import BadModelError


def slice_span(model: onnx.ModelProto, entry: str, exit_: str, shapes: dict[str, list[int]]) -> onnx.ModelProto:
    """Nodes computing `exit_` from `entry` (plus constants); entry becomes the only input,
    with a dynamic batch dim. Raises BadModelError when the span reads other activations."""
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    tensors = graph.tensors()
    if entry not in tensors or exit_ not in tensors:
        raise BadModelError(f"block boundary tensors '{entry}' -> '{exit_}' are not in the model")
    source, sink = tensors[entry], tensors[exit_]
    if isinstance(source, gs.Variable):
        source.inputs.clear()
        source.dtype = np.float32
        source.shape = ["batch", *shapes[entry][1:]]
    sink.dtype = np.float32
    sink.shape = ["batch", *shapes[exit_][1:]]
    graph.inputs = [source]
    graph.outputs = [sink]
    graph.cleanup(remove_unused_graph_inputs=True).toposort()
    produced = {out.name for node in graph.nodes for out in node.outputs}
    for node in graph.nodes:
        for tensor in node.inputs:
            if isinstance(tensor, gs.Variable) and tensor.name and tensor.name != entry and tensor.name not in produced:
                raise BadModelError(f"the span '{entry}' -> '{exit_}' reads '{tensor.name}' from outside it")
    sliced = gs.export_onnx(graph)
    sliced.ir_version = model.ir_version
    del sliced.opset_import[:]
    sliced.opset_import.extend(model.opset_import)
    return sliced
