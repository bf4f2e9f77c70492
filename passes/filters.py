"""The layers that hold filters (Conv, ConvTranspose, Gemm, MatMul with a constant weight):
where each filter sits in the weight, whether the layer mixes its input channels, and what it
costs in multiply-accumulates. The op registry (ops.py) says which op has which layout."""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
import onnx

from onnxwootz.passes.graph_index import attribute


def elements(shape: Sequence[int] | None) -> int:
    """Element count of a shape (0 for an unknown or empty one)."""
    return int(np.prod(shape)) if shape else 0


@dataclasses.dataclass(frozen=True)
class FilterLayout:
    """How one producer kind's weight holds its filters."""

    count: Callable[[onnx.NodeProto, np.ndarray], int | None]
    """Filters (output channels) of a node with this weight; None when the weight is not one
    the layout knows (a Gemm weight that is not 2-D)."""
    scale: Callable[[onnx.NodeProto, np.ndarray, np.ndarray], np.ndarray]
    """The weight with filter c multiplied by factor[c] (BatchNorm folding)."""
    mixes: Callable[[onnx.NodeProto, Sequence[int] | None], bool]
    """Whether each output reads many input channels, given the weight's shape (None when
    unknown): such a layer's cost scales with its kept inputs, and it opens a module."""


def _mixes_always(node: onnx.NodeProto, weight_shape: Sequence[int] | None) -> bool:
    return True


def _conv_mixes(node: onnx.NodeProto, weight_shape: Sequence[int] | None) -> bool:
    """A depthwise conv (one input channel per group) keeps its input's channels."""
    return attribute(node, "group", 1) == 1 or not weight_shape or weight_shape[1] != 1


def _conv_scale(node: onnx.NodeProto, weight: np.ndarray, factor: np.ndarray) -> np.ndarray:
    return weight * factor.reshape(-1, *([1] * (weight.ndim - 1)))


def _conv_transpose_scale(node: onnx.NodeProto, weight: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Weight [C_in, C_out / group, k...]: filter g * C_out/group + j is column j of group g's rows."""
    group = attribute(node, "group", 1)
    grouped = weight.reshape(group, weight.shape[0] // group, *weight.shape[1:])
    per_channel = factor.reshape(group, 1, weight.shape[1], *([1] * (weight.ndim - 2)))
    return (grouped * per_channel).reshape(weight.shape)


def _gemm_count(node: onnx.NodeProto, weight: np.ndarray) -> int | None:
    if weight.ndim != 2:
        return None
    return weight.shape[0] if attribute(node, "transB", 0) else weight.shape[1]


def _gemm_scale(node: onnx.NodeProto, weight: np.ndarray, factor: np.ndarray) -> np.ndarray:
    return weight * (factor[:, None] if attribute(node, "transB", 0) else factor[None, :])


CONV = FilterLayout(lambda node, weight: weight.shape[0], _conv_scale, _conv_mixes)
CONV_TRANSPOSE = FilterLayout(lambda node, weight: weight.shape[1] * attribute(node, "group", 1),
                              _conv_transpose_scale, _mixes_always)
GEMM = FilterLayout(_gemm_count, _gemm_scale, _mixes_always)
"""Gemm's B ([K, N], or [N, K] with transB) and MatMul's constant right operand ([K, N])."""


def conv_macs(node: onnx.NodeProto, shapes: dict[str, list[int]], out: list[int]) -> int:
    weight = shapes.get(node.input[1])
    return elements(out) * elements(weight[1:]) if weight else 0


def conv_transpose_macs(node: onnx.NodeProto, shapes: dict[str, list[int]], out: list[int]) -> int:
    weight, data = shapes.get(node.input[1]), shapes.get(node.input[0])
    return elements(data) * weight[1] * elements(weight[2:]) if weight and data else 0


def gemm_macs(node: onnx.NodeProto, shapes: dict[str, list[int]], out: list[int]) -> int:
    a = shapes.get(node.input[0])
    if not a:
        return 0
    return elements(out) * (a[0] if attribute(node, "transA", 0) else a[1])


def matmul_macs(node: onnx.NodeProto, shapes: dict[str, list[int]], out: list[int]) -> int:
    a = shapes.get(node.input[0])
    return elements(out) * a[-1] if a else 0
