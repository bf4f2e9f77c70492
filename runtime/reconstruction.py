"""Least-squares reconstruction: the closed-form start of a pruned block.

Removing filters from a conv takes input channels away from the convs that read it. Those
readers' weights were fitted to the full input; refitting them by ridge regression, so that
their outputs match the teacher's on real images given only the surviving inputs, recovers
most of what the removal lost before a single gradient step (as in channel-pruning
reconstruction, He et al. 2017). Pre-training then starts from there instead of from the plain
L1-pruned weights. Inputs need no labels, and the normal equations are accumulated batch by
batch; the teacher's tensors are kept only for the batches a refit reads (TeacherTargets)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from onnxwootz.passes.graph_index import replace_initializer
from onnxwootz.passes.ops import op_kind
from onnxwootz.runtime.sessions import cpu_session
from onnxwootz.runtime.training import with_outputs

ROWS_PER_UNKNOWN = 200
"""A refit stops reading images once its least-squares problem has this many rows (image x
output position) per weight it solves for: a high-resolution conv is well posed after a few
dozen images, a low-resolution one uses them all."""
RIDGE = 1e-3
"""Ridge strength relative to the mean diagonal of the normal matrix: enough to keep a
rank-deficient fit (dead ReLU channels) well posed, small enough not to bias it."""


def _attributes(node: onnx.NodeProto) -> dict:
    return {attribute.name: onnx.helper.get_attribute_value(attribute) for attribute in node.attribute}


def refittable_convs(span: onnx.ModelProto, canonical_slices: dict[str, list[dict]]) -> list[onnx.NodeProto]:
    """2-D constant-weight convs (the ops the registry marks `refit`) of `span` that lost input
    channels, in graph order (a grouped conv loses the same positions from every group; a
    depthwise one never loses inputs alone)."""
    initializers = {init.name for init in span.graph.initializer}
    convs = []
    for node in span.graph.node:
        kind = op_kind(node)
        if kind is None or not kind.refit or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        if len(_attributes(node).get("kernel_shape", [1, 1])) != 2:
            continue
        if any(entry["axis"] == 1 for entry in canonical_slices.get(node.input[1], [])):
            convs.append(node)
    return convs


def _columns(x: torch.Tensor, node: onnx.NodeProto, kernel: Sequence[int]) -> torch.Tensor:
    """im2col of a conv's input: (images, weight elements, output positions)."""
    attributes = _attributes(node)
    pads = attributes.get("pads", [0, 0, 0, 0])
    if attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ValueError("auto_pad convs are not refitted")
    x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
    return F.unfold(x, list(kernel), dilation=attributes.get("dilations", [1, 1]), stride=attributes.get("strides", [1, 1]))


def _normal_equations(columns: torch.Tensor, response: torch.Tensor, bias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch's X^T X and X^T Y, X one row per (image, output position) with a constant
    column appended for a bias. Products in float32 (a batch is small), returned in float64
    for the sums over batches."""
    gram = torch.bmm(columns, columns.transpose(1, 2)).sum(0).double()
    rhs = torch.bmm(columns, response.transpose(1, 2)).sum(0).double()
    if bias:
        sums = columns.sum((0, 2)).double()
        count = torch.tensor([[float(columns.shape[0] * columns.shape[2])]], dtype=torch.float64)
        gram = torch.cat([torch.cat([gram, sums[:, None]], 1), torch.cat([sums[None], count], 1)])
        rhs = torch.cat([rhs, response.sum((0, 2)).double()[None]])
    return gram, rhs


class TeacherTargets:
    """The teacher's tensors on the refit images, computed once per batch and kept: every conv
    of a span reads the same batches, and the sensitivity profile refits one span at several
    rates. A full teacher run dominates a refit (PP-OCRv4's recognizer: 13 of its last unit's
    14 s), so this takes the profile's refits from one teacher run per conv, rate and batch to
    one per batch."""

    def __init__(self, teacher: onnx.ModelProto, images: np.ndarray, batch: int = 32, threads: int = 1):
        self.teacher, self.images, self.batch, self.threads = teacher, images, batch, threads
        self.feed = teacher.graph.input[0].name
        self._values: dict[int, dict[str, np.ndarray]] = {}
        self._sessions: dict[tuple[str, ...], object] = {}

    def starts(self) -> range:
        return range(0, len(self.images), self.batch)

    def values(self, start: int, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Tensors `names` (the feed among them, if asked) on the batch starting at image `start`."""
        cached = self._values.setdefault(start, {self.feed: self.images[start:start + self.batch]})
        missing = tuple(dict.fromkeys(name for name in names if name not in cached))
        if missing:
            if missing not in self._sessions:
                self._sessions[missing] = cpu_session(with_outputs(self.teacher, list(missing)), self.threads)
            cached.update(zip(missing, self._sessions[missing].run(None, {self.feed: cached[self.feed]})))
        return {name: cached[name] for name in names}


def reconstruct_span(targets: TeacherTargets, span: onnx.ModelProto, entries: Sequence[str],
                     canonical_slices: dict[str, list[dict]]) -> int:
    """Refit, in place and in graph order, every conv of the pruned `span` (a block reading
    teacher tensors `entries`) that lost input channels: its output on the span's own
    activations is fitted to the teacher's output of the same node (at the kept output
    channels), on the images of `targets`. Each refit sees the earlier ones. Returns how many
    convs were refitted."""
    convs = refittable_convs(span, canonical_slices)
    if not convs:
        return 0
    needed = list(entries) + [node.output[0] for node in convs]
    span_inputs = [value.name for value in span.graph.input]
    for node in convs:
        weight_name = node.input[1]
        weights = {init.name: init for init in span.graph.initializer}
        weight = numpy_helper.to_array(weights[weight_name])
        bias_name = node.input[2] if len(node.input) > 2 and node.input[2] in weights else None
        keep_out = next((np.asarray(e["keep"]) for e in canonical_slices.get(weight_name, []) if e["axis"] == 0), None)
        student = cpu_session(with_outputs(span, [node.input[0]]), targets.threads)
        groups = _attributes(node).get("group", 1)
        sums: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        rows = 0
        for start in targets.starts():
            values = targets.values(start, needed)
            target = values[node.output[0]] if keep_out is None else values[node.output[0]][:, keep_out]
            (inputs,) = student.run(None, {name: values[name] for name in span_inputs})
            # each group is its own least-squares problem: its inputs to its filters
            per_group = zip(torch.from_numpy(inputs).chunk(groups, 1), torch.from_numpy(target).flatten(2).chunk(groups, 1))
            batch = [_normal_equations(_columns(x, node, weight.shape[2:]), y, bias_name is not None) for x, y in per_group]
            sums = batch if sums is None else [(a + c, b + d) for (a, b), (c, d) in zip(sums, batch)]
            rows += int(np.prod(target.shape)) // target.shape[1]
            if rows >= ROWS_PER_UNKNOWN * len(sums[0][0]):
                break
        solution = torch.cat([_ridge_solve(gram, rhs) for gram, rhs in sums], 1)  # unknowns x filters
        if bias_name:
            replace_initializer(span, bias_name, solution[-1].float().numpy())
            solution = solution[:-1]
        replace_initializer(span, weight_name, np.ascontiguousarray(solution.T.reshape(weight.shape).float().numpy()))
    return len(convs)


def _ridge_solve(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    ridge = RIDGE * float(gram.diagonal().mean()) + 1e-12
    return torch.linalg.solve(gram + ridge * torch.eye(len(gram), dtype=gram.dtype), rhs)
