"""Fold inference-mode BatchNormalization into the layer before it, for export: one node less
per BN at run time, and the same outputs up to float rounding.

Rules (FoldBatchNorm):
- A BatchNormalization `BN(x) = (x - mean) * scale / sqrt(var + eps) + bias` is folded into
  the layer producing `x`, one the op registry marks `folds_bn` (Conv, ConvTranspose, Gemm), when
  - that producer's output feeds this BN only and is not a graph output;
  - the layer's weight (Gemm: input B) and bias, and all four BN parameters, are initializers,
    and the weight and bias are read by this layer only (their names are kept, so they must
    not change for anybody else);
  - the BN has one output and is per-channel (no `spatial=0`, pre-opset-9 graphs).
- Folding scales the weight per output channel by `s = scale / sqrt(var + eps)` and sets the
  bias to `(b - mean) * s + bias` (Gemm: `C' = (beta * C - mean) * s + bias`, beta = 1). The
  weight initializer keeps its name; a layer without a bias gets one named
  `<weight name>_bias` (made unique). The layer takes over the BN's output name, so graph
  outputs and downstream consumers are unchanged.
- BN parameter initializers that nothing reads any more are removed, as are value_info
  entries of the tensors that disappear.
- Every other BN stays as it is (e.g. after Concat or pooling, or after a conv whose output
  has a second consumer).
Requires: no BatchNormalization in training mode (training_mode=1)."""

from __future__ import annotations

import numpy as np
import onnx

from onnxwootz.passes.base import Pass, PassError, PassResult
from onnxwootz.passes.graph_index import GraphIndex, attribute, replace_initializer, set_attribute
from onnxwootz.passes.ops import op_kind


def _is_bn(node: onnx.NodeProto) -> bool:
    return node.op_type == "BatchNormalization" and node.domain in ("", "ai.onnx")


class FoldBatchNorm(Pass):
    """Folds each foldable inference-mode BatchNormalization into its Conv/ConvTranspose/Gemm."""

    def requires(self, model: onnx.ModelProto) -> None:
        training = [node.name or node.output[0] for node in model.graph.node
                    if _is_bn(node) and attribute(node, "training_mode", 0) == 1]
        if training:
            raise PassError(
                f"cannot fold BatchNormalization in training mode (training_mode=1): {', '.join(training[:3])}"
                + (f" and {len(training) - 3} more" if len(training) > 3 else "")
            )

    def call(self, model: onnx.ModelProto) -> PassResult:
        dropped: set[str] = set()
        for bn in [node for node in model.graph.node if _is_bn(node)]:
            index = GraphIndex(model)  # rebuilt per fold: a fold renames a layer's output
            layer = _foldable_layer(index, bn)
            if layer is None:
                continue
            _fold(model, index, layer, bn)
            model.graph.node.remove(bn)
            dropped.update(bn.input)
        _remove_unused(model, dropped)
        return PassResult(model, bool(dropped))


def _constant(index: GraphIndex, name: str) -> bool:
    """An initializer that no caller can override by feeding a graph input of that name."""
    return index.is_constant(name) and all(value.name != name for value in index.graph.input)


def _bias_name(layer: onnx.NodeProto) -> str | None:
    return layer.input[2] if len(layer.input) > 2 and layer.input[2] else None


def _foldable_layer(index: GraphIndex, bn: onnx.NodeProto) -> onnx.NodeProto | None:
    """The layer `bn` can be folded into, or None when a rule above says no."""
    if len([name for name in bn.output if name]) != 1 or attribute(bn, "spatial", 1) != 1:
        return None
    if len(bn.input) < 5 or not all(_constant(index, name) for name in bn.input[1:5]):
        return None
    layer = index.producer.get(bn.input[0])
    kind = op_kind(layer) if layer is not None else None
    if kind is None or not kind.folds_bn:
        return None
    if len(index.consumers[bn.input[0]]) != 1 or bn.input[0] in index.graph_outputs:
        return None
    for name in filter(None, (layer.input[1], _bias_name(layer))):
        if not _constant(index, name) or len(index.consumers[name]) != 1 or name in index.graph_outputs:
            return None
    weight = index.array(layer.input[1])
    channels = kind.filters.count(layer, weight)
    if not np.issubdtype(weight.dtype, np.floating) or channels is None:
        return None
    if any(index.array(name).size != channels for name in bn.input[1:5]):
        return None
    return layer


def _fold(model: onnx.ModelProto, index: GraphIndex, layer: onnx.NodeProto, bn: onnx.NodeProto) -> None:
    """Rewrite `layer`'s weight and bias to absorb `bn`, and give `layer` the BN's output."""
    scale, shift, mean, var = (index.array(name).astype(np.float64) for name in bn.input[1:5])
    factor = scale / np.sqrt(var + attribute(bn, "epsilon", 1e-5))
    weight_name = layer.input[1]
    weight = index.array(weight_name)
    bias_name = _bias_name(layer)
    old_bias = index.array(bias_name).astype(np.float64) if bias_name else np.zeros(1)

    new_weight = op_kind(layer).filters.scale(layer, weight, factor)
    beta = attribute(layer, "beta")  # Gemm's bias scale, now folded into the bias
    new_bias = ((1.0 if beta is None else beta) * old_bias - mean) * factor + shift
    if beta is not None:
        set_attribute(layer, "beta", 1.0)

    replace_initializer(model, weight_name, new_weight.astype(weight.dtype))
    if bias_name is None:
        bias_name = _unique_name(index, f"{weight_name}_bias")
        while len(layer.input) < 3:
            layer.input.append("")
        layer.input[2] = bias_name
    replace_initializer(model, bias_name, new_bias.astype(weight.dtype))
    layer.output[0] = bn.output[0]


def _unique_name(index: GraphIndex, base: str) -> str:
    taken = set(index.initializers) | set(index.producer) | set(index.consumers) | set(index.graph_inputs)
    name, counter = base, 1
    while name in taken:
        name, counter = f"{base}_{counter}", counter + 1
    return name


def _remove_unused(model: onnx.ModelProto, names: set[str]) -> None:
    """Drop initializers and value_info among `names` that no node or graph output reads."""
    used = {name for node in model.graph.node for name in node.input} | {v.name for v in model.graph.output}
    produced = {name for node in model.graph.node for name in node.output}
    dead = names - used
    for init in [init for init in model.graph.initializer if init.name in dead]:
        model.graph.initializer.remove(init)
    for value in [v for v in model.graph.value_info if v.name in dead and v.name not in produced]:
        model.graph.value_info.remove(value)
