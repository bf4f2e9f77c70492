"""Least-squares reconstruction: the closed-form start of a pruned block.

Removing filters from a conv takes input channels away from the convs that read it. Those
readers' weights were fitted to the full input; refitting them by ridge regression, so that
their outputs match the teacher's on real images given only the surviving inputs, recovers
most of what the removal lost before a single gradient step (as in channel-pruning
reconstruction, He et al. 2017). Pre-training then starts from there instead of from the plain
L1-pruned weights. Inputs need no labels, and the normal equations are accumulated batch by
batch, so memory does not grow with the number of images."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from onnxwootz.passes.graph_index import replace_initializer
from onnxwootz.runtime.sessions import cpu_session
from onnxwootz.runtime.training import with_outputs

RIDGE = 1e-3
"""Ridge strength relative to the mean diagonal of the normal matrix: enough to keep a
rank-deficient fit (dead ReLU channels) well posed, small enough not to bias it."""


def _attributes(node: onnx.NodeProto) -> dict:
    return {attribute.name: onnx.helper.get_attribute_value(attribute) for attribute in node.attribute}


def refittable_convs(span: onnx.ModelProto, canonical_slices: dict[str, list[dict]]) -> list[onnx.NodeProto]:
    """Plain (group 1, 2-D, constant-weight) convs of `span` that lost input channels, in graph order."""
    initializers = {init.name for init in span.graph.initializer}
    convs = []
    for node in span.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        attributes = _attributes(node)
        if attributes.get("group", 1) != 1 or len(attributes.get("kernel_shape", [1, 1])) != 2:
            continue
        if any(entry["axis"] == 1 for entry in canonical_slices.get(node.input[1], [])):
            convs.append(node)
    return convs


def _columns(x: torch.Tensor, node: onnx.NodeProto, kernel: Sequence[int]) -> torch.Tensor:
    """im2col of a conv's input: one row per output position, one column per weight element."""
    attributes = _attributes(node)
    pads = attributes.get("pads", [0, 0, 0, 0])
    if attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ValueError("auto_pad convs are not refitted")
    x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
    columns = F.unfold(x, list(kernel), dilation=attributes.get("dilations", [1, 1]), stride=attributes.get("strides", [1, 1]))
    return columns.transpose(1, 2).reshape(-1, columns.shape[1])


def reconstruct_span(teacher: onnx.ModelProto, span: onnx.ModelProto, entry: str,
                     canonical_slices: dict[str, list[dict]], images: np.ndarray, batch: int = 256,
                     threads: int = 1) -> int:
    """Refit, in place and in graph order, every conv of the pruned `span` (a block reading
    teacher tensor `entry`) that lost input channels: its output on the span's own activations
    is fitted to the teacher's output of the same node (at the kept output channels). Each
    refit sees the earlier ones. ONNX Runtime runs on `threads` threads. Returns how many convs
    were refitted."""
    convs = refittable_convs(span, canonical_slices)
    if not convs:
        return 0
    feed = teacher.graph.input[0].name
    entry_is_input = entry == feed
    targets = cpu_session(with_outputs(teacher, ([] if entry_is_input else [entry]) + [node.output[0] for node in convs]),
                          threads)
    span_input = span.graph.input[0].name
    for position, node in enumerate(convs):
        weight_name = node.input[1]
        weights = {init.name: init for init in span.graph.initializer}
        weight = numpy_helper.to_array(weights[weight_name])
        bias_name = node.input[2] if len(node.input) > 2 and node.input[2] in weights else None
        keep_out = next((np.asarray(e["keep"]) for e in canonical_slices.get(weight_name, []) if e["axis"] == 0), None)
        student = cpu_session(with_outputs(span, [node.input[0]]), threads)
        gram = rhs = None
        for start in range(0, len(images), batch):
            outputs = targets.run(None, {feed: images[start:start + batch]})
            entry_value = images[start:start + batch] if entry_is_input else outputs.pop(0)
            target = outputs[position] if keep_out is None else outputs[position][:, keep_out]
            (inputs,) = student.run(None, {span_input: entry_value})
            design = _columns(torch.from_numpy(inputs).double(), node, weight.shape[2:])
            if bias_name:
                design = torch.cat([design, torch.ones(len(design), 1, dtype=design.dtype)], 1)
            response = torch.from_numpy(target).double().flatten(2).transpose(1, 2).reshape(-1, target.shape[1])
            gram = design.T @ design if gram is None else gram + design.T @ design
            rhs = design.T @ response if rhs is None else rhs + design.T @ response
        ridge = RIDGE * float(gram.diagonal().mean()) + 1e-12
        solution = torch.linalg.solve(gram + ridge * torch.eye(len(gram), dtype=gram.dtype), rhs)
        if bias_name:
            replace_initializer(span, bias_name, solution[-1].float().numpy())
            solution = solution[:-1]
        replace_initializer(span, weight_name, np.ascontiguousarray(solution.T.reshape(weight.shape).float().numpy()))
    return len(convs)
