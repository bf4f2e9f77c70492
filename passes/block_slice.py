"""Block slicing: the span of a model between a tuning block's entry and exit tensors as a
standalone ModelProto (onnx-graphsurgeon does the cut and the dead-node cleanup)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx

from onnxwootz.core.errors import BadModelError


def slice_span(model: onnx.ModelProto, entries: Sequence[str], exits: Sequence[str],
               shapes: dict[str, list[int]]) -> onnx.ModelProto:
    """Nodes computing `exits` from `entries` (plus constants); the entries become the inputs
    (those the exits need), each with a dynamic batch dim. Raises BadModelError when the span
    reads other activations."""
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    tensors = graph.tensors()
    boundary = f"{', '.join(entries)} -> {', '.join(exits)}"
    missing = [name for name in [*entries, *exits] if name not in tensors]
    if missing:
        raise BadModelError(f"block boundary tensors {boundary}: {', '.join(missing)} not in the model")
    sources = []
    for name in entries:
        source = tensors[name]
        if isinstance(source, gs.Variable):
            source.inputs.clear()
            source.dtype = np.float32
            source.shape = ["batch", *shapes[name][1:]]
        sources.append(source)
    sinks = [tensors[name] for name in exits]
    for sink in sinks:
        sink.dtype = np.float32
        sink.shape = ["batch", *shapes[sink.name][1:]]
    graph.inputs = sources
    graph.outputs = sinks
    graph.cleanup(remove_unused_graph_inputs=True).toposort()
    produced = {out.name for node in graph.nodes for out in node.outputs}
    allowed = set(entries)
    for node in graph.nodes:
        for tensor in node.inputs:
            if isinstance(tensor, gs.Variable) and tensor.name and tensor.name not in allowed | produced:
                raise BadModelError(f"the span {boundary} reads '{tensor.name}' from outside it")
    sliced = gs.export_onnx(graph)
    sliced.ir_version = model.ir_version
    del sliced.opset_import[:]
    sliced.opset_import.extend(model.opset_import)
    return sliced
