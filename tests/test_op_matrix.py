"""The one-op equivalence matrix: every op kind the channel analysis accepts (every key of
ops.RULES and DOMAIN_RULES), plus the conv forms it must refuse, alone between two
convs: x[1,4,8,8] -> conv_in (4->8) -> OP -> conv_out -> y.

The zoo and exported models exercise ops only in the combinations real networks happen to use;
a rule can be wrong for an op that appears nowhere, or only ever behind a barrier. Here each op
is pruned at rate 0.5 at both granularities and must (1) be the mask of the original
(test_apply_equivalence's oracle), (2) run the same in the torch view as in ONNX Runtime, and
(3) be smaller where the analysis passes channels through the op, or keep conv_in's channels
for the stated reason where the op is a barrier. A new rule without a case here fails
`test_matrix_covers_every_rule`."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Callable

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxwootz.core.errors import UnsupportedOpError
from onnxwootz.core.onnx_helpers import dummy_feed
from onnxwootz.passes.channel_groups import ChannelGroup
from onnxwootz.passes.ops import DOMAIN_RULES, RULES
from onnxwootz.prepared import PreparedModel, prepare
from onnxwootz.pruning import PrunedModel, prune_prepared, resolve_config
from onnxwootz.runtime.sessions import cpu_session
from onnxwootz.runtime.torch_graph import TorchGraph
from test_apply_equivalence import check_equivalent, check_rate_zero

C = 8  # conv_in's filters: the channels every case prunes (or keeps) through its op
TORCH_TOLERANCE = 1e-5  # max |torch - ORT| relative to max |ORT|


class Net:
    """A graph under construction: x[1,4,8,8] -> conv_in (4 -> C, 3x3, pads 1) -> 'a'."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(0)
        self.counts: Counter[str] = Counter()
        self.conv("x", C, 4, output="a", name="conv_in")

    def _name(self, base: str) -> str:
        self.counts[base] += 1
        return f"{base}_{self.counts[base]}"

    def const(self, value: np.ndarray | list | float, dtype: type = np.float32) -> str:
        name = self._name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def ints(self, *values: int) -> str:
        return self.const(list(values), np.int64)

    def per_channel(self, low: float = -1.0, high: float = 1.0, shape: tuple[int, ...] = (1, C, 1, 1)) -> str:
        return self.const(self.rng.uniform(low, high, shape))

    def op(self, op_type: str, *inputs: str, outputs: int = 1, domain: str = "", **attrs) -> str | list[str]:
        name = self._name(op_type.lower())
        names = [f"{name}_out{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, name=name, domain=domain, **attrs))
        return names[0] if outputs == 1 else names

    def conv(self, x: str, cout: int, cin: int, group: int = 1, kernel: int = 3, output: str | None = None,
             name: str | None = None) -> str:
        name = name or self._name("conv")
        weight = self.const(self.rng.standard_normal((cout, cin // group, kernel, kernel)) * 0.3)
        bias = self.const(self.rng.standard_normal(cout) * 0.1)
        output = output or f"{name}_out"
        self.nodes.append(helper.make_node("Conv", [x, weight, bias], [output], name=name, group=group,
                                           pads=[kernel // 2] * 4))
        return output

    def gemm(self, x: str, n_in: int, n_out: int = 5) -> str:
        weight = self.const(self.rng.standard_normal((n_out, n_in)) * 0.3)
        return self.op("Gemm", x, weight, self.const(self.rng.standard_normal(n_out) * 0.1), transB=1)

    def model(self, outputs: list[str], opset: int, domains: dict[str, int]) -> onnx.ModelProto:
        """The graph with `outputs`, their shapes as ONNX Runtime computes them."""
        graph = helper.make_graph(
            self.nodes, "op_matrix", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs], self.inits)
        imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in domains.items()]
        model = helper.make_model(graph, opset_imports=imports, ir_version=8 if opset <= 18 else 9)
        values = cpu_session(model).run(None, {"x": np.zeros((1, 4, 8, 8), np.float32)})
        del model.graph.output[:]
        model.graph.output.extend(
            helper.make_tensor_value_info(name, TensorProto.FLOAT, value.shape) for name, value in zip(outputs, values))
        onnx.checker.check_model(model, full_check=True)
        return model


Build = Callable[[Net, str], str | list[str]]  # from conv_in's output 'a' to the graph output(s)


@dataclasses.dataclass(frozen=True)
class Case:
    build: Build
    barrier: str | None = None  # None: conv_in's channels prune through; else: why they are kept
    opset: int = 17
    torch_refuses: str | None = None  # the torch view's UnsupportedOpError for an op it does not run
    domains: tuple[tuple[str, int], ...] = ()
    marks: tuple = ()

    def model(self) -> onnx.ModelProto:
        net = Net()
        outputs = self.build(net, "a")
        return net.model(outputs if isinstance(outputs, list) else [outputs], self.opset, dict(self.domains))


def _out(net: Net, m: str, channels: int = C) -> str:
    """conv_out: `channels` -> 4, the consumer whose input channels follow conv_in's."""
    return net.conv(m, 4, channels, name="conv_out")


def unary(op: str, positive: bool = False, **attrs) -> Build:
    """OP applied per channel (activations, pools); `positive` puts a Sigmoid first (Log, Sqrt, ...)."""
    def build(n: Net, a: str) -> str:
        return _out(n, n.op(op, n.op("Sigmoid", a) if positive else a, **attrs))
    return build


def with_const(op: str, const: Callable[[Net], str], const_first: bool = False, positive: bool = False) -> Build:
    """OP(a, constant) (or OP(constant, a)), the constant per channel or a scalar."""
    def build(n: Net, a: str) -> str:
        x, c = n.op("Sigmoid", a) if positive else a, const(n)
        return _out(n, n.op(op, *((c, x) if const_first else (x, c))))
    return build


def reduce(op: str, axes: tuple[int, ...] = (2, 3), keepdims: int = 1, positive: bool = False) -> Build:
    """Reduce-over-axes with the axes as input (opset 18)."""
    def build(n: Net, a: str) -> str:
        x = n.op("Sigmoid", a) if positive else a
        r = n.op(op, x, n.ints(*axes), keepdims=keepdims)
        if 1 in [axis % 4 for axis in axes]:
            return _out(n, r, 1)
        return _out(n, r) if keepdims else n.gemm(r, C)
    return build


# -- cases whose op structure needs more than one node ------------------------------------------

def cast_round_trip(n: Net, a: str) -> str:
    return _out(n, n.op("Cast", n.op("Cast", a, to=TensorProto.DOUBLE), to=TensorProto.FLOAT))


def clip(n: Net, a: str) -> str:
    return _out(n, n.op("Clip", a, n.const(-0.5), n.const(0.7)))


def batch_norm(n: Net, a: str) -> str:
    params = [n.per_channel(0.5, 1.5, (C,)), n.per_channel(-0.2, 0.2, (C,)), n.per_channel(-0.2, 0.2, (C,)),
              n.per_channel(0.5, 2.0, (C,))]
    return _out(n, n.op("BatchNormalization", a, *params, epsilon=1e-5))


def instance_norm(n: Net, a: str) -> str:
    return _out(n, n.op("InstanceNormalization", a, n.per_channel(0.5, 1.5, (C,)), n.per_channel(-0.2, 0.2, (C,))))


def prelu(n: Net, a: str) -> str:
    return _out(n, n.op("PRelu", a, n.per_channel(0.0, 0.3, (C, 1, 1))))


def residual_add(n: Net, a: str) -> str:
    """a + conv_b(relu(a)): the Add ties conv_in's and conv_b's filters."""
    return _out(n, n.op("Add", a, n.conv(n.op("Relu", a), C, C)))


def se_gate(n: Net, a: str) -> str:
    """Squeeze-excitation: a * sigmoid(conv(relu(conv(GAP(a))))): the gate's filters tie to a's."""
    squeeze = n.op("Relu", n.conv(n.op("GlobalAveragePool", a), 2, C, kernel=1))
    return _out(n, n.op("Mul", a, n.op("Sigmoid", n.conv(squeeze, C, 2, kernel=1))))


def mean_of_branches(n: Net, a: str) -> str:
    return _out(n, n.op("Mean", a, n.conv(a, C, C), n.per_channel()))


def sum_of_branches(n: Net, a: str) -> str:
    return _out(n, n.op("Sum", a, n.conv(a, C, C), n.const(0.25)))


def resize(n: Net, a: str) -> str:
    return _out(n, n.op("Resize", a, "", n.const([1.0, 1.0, 2.0, 2.0]), mode="nearest"))


def resize_torch_nearest(n: Net, a: str) -> str:
    return _out(n, n.op("Resize", a, "", n.const([1.0, 1.0, 2.0, 2.0]), mode="nearest",
                        coordinate_transformation_mode="asymmetric", nearest_mode="floor"))


def resize_linear_sizes(n: Net, a: str) -> str:
    """Constant sizes [1, C, 12, 12]: the channel entry must follow the pruned channels."""
    return _out(n, n.op("Resize", a, "", "", n.ints(1, C, 12, 12), mode="linear"))


def resize_runtime_sizes(n: Net, a: str) -> str:
    """sizes = Concat(Shape(a)[0:2], [16, 12]): the channel entry is read from a at run time."""
    batch_channels = n.op("Slice", n.op("Shape", a), n.ints(0), n.ints(2))
    sizes = n.op("Concat", batch_channels, n.ints(16, 12), axis=0)
    return _out(n, n.op("Resize", a, "", "", sizes, mode="nearest", coordinate_transformation_mode="asymmetric",
                        nearest_mode="floor"))


def resize_computed_sizes(n: Net, a: str) -> str:
    """sizes' channel entry is Shape(a)[1] * 1: computed, so it cannot be made to follow."""
    shape = n.op("Shape", a)
    channels = n.op("Mul", n.op("Slice", shape, n.ints(1), n.ints(2)), n.ints(1))
    sizes = n.op("Concat", n.op("Slice", shape, n.ints(0), n.ints(1)), channels, n.ints(16, 12), axis=0)
    return _out(n, n.op("Resize", a, "", "", sizes, mode="nearest", coordinate_transformation_mode="asymmetric",
                        nearest_mode="floor"))


def resize_sizes_axes(n: Net, a: str) -> str:
    """Opset 18's axes: sizes lists H and W only."""
    return _out(n, n.op("Resize", a, "", "", n.ints(12, 16), axes=[2, 3], mode="linear"))


def upsample(n: Net, a: str) -> str:
    return _out(n, n.op("Upsample", a, n.const([1.0, 1.0, 2.0, 2.0]), mode="nearest"))


def pad_spatial(n: Net, a: str) -> str:
    return _out(n, n.op("Pad", a, n.ints(0, 0, 1, 2, 0, 0, 2, 1), n.const(0.5), mode="constant"))


def pad_spatial_axes(n: Net, a: str) -> str:
    return _out(n, n.op("Pad", a, n.ints(1, 0, 0, 2), "", n.ints(2, 3), mode="reflect"))


def pad_channels(n: Net, a: str) -> str:
    return _out(n, n.op("Pad", a, n.ints(0, 1, 0, 0, 0, 1, 0, 0)), C + 2)


def concat_channels(n: Net, a: str) -> str:
    """Concat(a, conv_b(a)) on the channel axis: each part prunes on its own."""
    return _out(n, n.op("Concat", a, n.conv(a, 6, C), axis=1), C + 6)


def concat_spatial(n: Net, a: str) -> str:
    """Concat on H: the parts' channels are one channel each, tied."""
    return _out(n, n.op("Concat", a, n.conv(a, C, C), axis=2))


def concat_batch(n: Net, a: str) -> str:
    return _out(n, n.op("Concat", a, n.op("Relu", a), axis=0))


def split_channels(n: Net, a: str) -> list[str]:
    """Split (num_outputs, opset 18) on the channels into two convs."""
    first, second = n.op("Split", a, outputs=2, axis=1, num_outputs=2)
    return [n.conv(first, 4, C // 2), n.conv(second, 4, C // 2)]


def split_channel_sizes(n: Net, a: str) -> list[str]:
    first, second = n.op("Split", a, n.ints(3, 5), outputs=2, axis=1)
    return [n.conv(first, 4, 3), n.conv(second, 4, 5)]


def split_spatial(n: Net, a: str) -> str:
    top, bottom = n.op("Split", a, n.ints(3, 5), outputs=2, axis=2)
    return _out(n, n.op("Concat", n.op("Relu", bottom), top, axis=2))


def slice_spatial(n: Net, a: str) -> str:
    return _out(n, n.op("Slice", a, n.ints(1, 0), n.ints(7, -1), n.ints(2, 3)))


def slice_channels(n: Net, a: str) -> str:
    return _out(n, n.op("Slice", a, n.ints(2), n.ints(7), n.ints(1)), 5)


def flatten_gap_gemm(n: Net, a: str) -> str:
    return n.gemm(n.op("Flatten", n.op("GlobalAveragePool", a), axis=1), C)


def flatten_gemm(n: Net, a: str) -> str:
    """Flatten of [1,C,4,4]: each channel is 16 features of the Gemm."""
    return n.gemm(n.op("Flatten", n.op("MaxPool", a, kernel_shape=[2, 2], strides=[2, 2]), axis=1), C * 16)


def flatten_batch_axis(n: Net, a: str) -> str:
    return _out(n, n.op("Reshape", n.op("Flatten", a, axis=2), n.ints(1, C, 8, 8)))


def matmul_2d(n: Net, a: str) -> str:
    flat = n.op("Flatten", n.op("GlobalMaxPool", a), axis=1)
    return n.op("MatMul", flat, n.const(n.rng.standard_normal((C, 5)) * 0.3))


def matmul_4d(n: Net, a: str) -> str:
    """a[1,C,8,8] @ W[8,8]: mixes the W axis, channels stay on axis 1."""
    return _out(n, n.op("MatMul", a, n.const(n.rng.standard_normal((8, 8)) * 0.3)))


def matmul_3d(n: Net, a: str) -> str:
    """[1,C,64] @ W[64,64] between two Reshapes."""
    mixed = n.op("MatMul", n.op("Reshape", a, n.ints(1, C, 64)), n.const(n.rng.standard_normal((64, 64)) * 0.1))
    return _out(n, n.op("Reshape", mixed, n.ints(1, C, 8, 8)))


def reshape_3d(n: Net, a: str) -> str:
    """[1,C,8,8] -> [1,C,64] -> Relu -> [1,C,8,8], constant targets."""
    flat = n.op("Relu", n.op("Reshape", a, n.ints(1, C, 64)))
    return _out(n, n.op("Reshape", flat, n.ints(1, C, 8, 8)))


def reshape_runtime(n: Net, a: str) -> str:
    """torch's x.view(x.size(0), x.size(1), -1) and back to Shape(a): targets computed at run time."""
    target = n.op("Concat", n.op("Gather", n.op("Shape", a), n.ints(0, 1), axis=0), n.ints(-1), axis=0)
    flat = n.op("Relu", n.op("Reshape", a, target))
    return _out(n, n.op("Reshape", flat, n.op("Shape", a)))


def channel_shuffle(n: Net, a: str) -> str:
    """ShuffleNet's Reshape [1,2,4,8,8] -> Transpose -> Reshape [1,8,8,8]: a permutation of the
    channels, made a Gather by prepare (canonicalize.shuffles_to_gathers)."""
    grouped = n.op("Reshape", a, n.ints(1, 2, C // 2, 8, 8))
    return _out(n, n.op("Reshape", n.op("Transpose", grouped, perm=[0, 2, 1, 3, 4]), n.ints(1, C, 8, 8)))


def gather_channels(n: Net, a: str) -> str:
    """Gather on the channel axis with a constant permutation."""
    return _out(n, n.op("Gather", a, n.ints(3, 0, 7, 1, 6, 2, 5, 4), axis=1))


def gather_channel_twice(n: Net, a: str) -> str:
    return _out(n, n.op("Gather", a, n.ints(0, 0, 1, 2, 3, 4, 5, 6), axis=1))


def gather_width(n: Net, a: str) -> str:
    """Gather along W: the channels pass through."""
    return _out(n, n.op("Gather", a, n.ints(7, 6, 5, 4, 3, 2, 1, 0), axis=3))


def transpose_hw(n: Net, a: str) -> str:
    return _out(n, n.op("Transpose", n.op("Relu", n.op("Transpose", a, perm=[0, 1, 3, 2])), perm=[0, 1, 3, 2]))


def transpose_nhwc(n: Net, a: str) -> str:
    return _out(n, n.op("Transpose", n.op("Relu", n.op("Transpose", a, perm=[0, 2, 3, 1])), perm=[0, 3, 1, 2]))


def unsqueeze_squeeze(n: Net, a: str) -> str:
    """[1,C,8,8] -> [1,C,8,8,1] -> Relu -> back."""
    return _out(n, n.op("Squeeze", n.op("Relu", n.op("Unsqueeze", a, n.ints(4))), n.ints(-1)))


def unsqueeze_channel_axis(n: Net, a: str) -> str:
    return _out(n, n.op("Squeeze", n.op("Relu", n.op("Unsqueeze", a, n.ints(1))), n.ints(1)))


def conv_transpose(n: Net, a: str) -> str:
    """ConvTranspose 8 -> 6 (2x2, stride 2) is a producer of its own prunable filters."""
    weight = n.const(n.rng.standard_normal((C, 6, 2, 2)) * 0.3)
    up = n.op("ConvTranspose", a, weight, n.const(n.rng.standard_normal(6) * 0.1), strides=[2, 2])
    return _out(n, n.op("Relu", up), 6)


def grouped_conv(n: Net, a: str) -> str:
    """2 groups of 4 -> 2 groups of 6: each group loses the same positions."""
    return _out(n, n.op("Relu", n.conv(a, 12, C, group=2)), 12)


def grouped_chain(n: Net, a: str) -> str:
    """ResNeXt's 1x1 -> grouped 3x3 -> 1x1, the grouped conv's output pruned too."""
    grouped = n.op("Relu", n.conv(a, C, C, group=4))
    return _out(n, n.op("Relu", n.conv(grouped, C, C, group=2)))


def channel_multiplier(n: Net, a: str) -> str:
    """Depthwise with 2 filters per channel (group = C, 2C outputs): groups go whole."""
    return _out(n, n.op("Relu", n.conv(a, 2 * C, C, group=C)), 2 * C)


def depthwise_conv(n: Net, a: str) -> str:
    return _out(n, n.op("Relu", n.conv(a, C, C, group=C)))


def convnext_mlp(n: Net, a: str) -> str:
    """ConvNeXt's block MLP on an NHWC view: Linear C -> 2C, GELU, Linear 2C -> C, layer scale."""
    nhwc = n.op("Transpose", a, perm=[0, 2, 3, 1])
    up = n.op("Add", n.op("MatMul", nhwc, n.const(n.rng.standard_normal((C, 2 * C)) * 0.3)),
              n.const(n.rng.standard_normal(2 * C) * 0.1))
    gelu = n.op("Mul", n.op("Mul", up, n.op("Add", n.op("Erf", n.op("Div", up, n.const(1.4142135))), n.const(1.0))),
                n.const(0.5))
    down = n.op("MatMul", gelu, n.const(n.rng.standard_normal((2 * C, C)) * 0.3))
    scaled = n.op("Mul", down, n.per_channel(0.5, 1.5, (C,)))
    return _out(n, n.op("Transpose", scaled, perm=[0, 3, 1, 2]))


def channels_last_reduce(n: Net, a: str) -> str:
    """A ReduceMean over the last axis of an NHWC view averages the channels."""
    nhwc = n.op("Transpose", a, perm=[0, 2, 3, 1])
    mean = n.op("ReduceMean", nhwc, n.ints(-1), keepdims=1)
    return _out(n, n.op("Transpose", n.op("Sub", nhwc, mean), perm=[0, 3, 1, 2]))


def layer_norm_nhwc(n: Net, a: str) -> str:
    """LayerNormalization over the channels of an NHWC view (ConvNeXt style)."""
    nhwc = n.op("Transpose", a, perm=[0, 2, 3, 1])
    normed = n.op("LayerNormalization", nhwc, n.per_channel(0.5, 1.5, (C,)), n.per_channel(-0.2, 0.2, (C,)), axis=-1)
    return _out(n, n.op("Transpose", normed, perm=[0, 3, 1, 2]))


def layer_norm_stream(n: Net, a: str) -> str:
    """A ConvNeXt stream: LayerNorm over an NHWC view's channels, an MLP, the residual Add, and
    a second LayerNorm over the sum (its removed channels are zero through the Add)."""
    nhwc = n.op("Transpose", a, perm=[0, 2, 3, 1])
    normed = n.op("LayerNormalization", nhwc, n.per_channel(0.5, 1.5, (C,)), n.per_channel(-0.2, 0.2, (C,)), axis=-1)
    up = n.op("Relu", n.op("MatMul", normed, n.const(n.rng.standard_normal((C, 2 * C)) * 0.3)))
    down = n.op("Add", n.op("MatMul", up, n.const(n.rng.standard_normal((2 * C, C)) * 0.3)),
                n.per_channel(-0.2, 0.2, (C,)))
    summed = n.op("Add", nhwc, n.op("Mul", down, n.per_channel(0.5, 1.5, (C,))))
    again = n.op("LayerNormalization", summed, n.per_channel(0.5, 1.5, (C,)), axis=-1)
    return _out(n, n.op("Transpose", again, perm=[0, 3, 1, 2]))


def layer_norm_after_sigmoid(n: Net, a: str) -> str:
    """A removed channel is 0.5 after a Sigmoid in the masked original: the statistics would change."""
    nhwc = n.op("Transpose", n.op("Sigmoid", a), perm=[0, 2, 3, 1])
    normed = n.op("LayerNormalization", nhwc, n.per_channel(0.5, 1.5, (C,)), n.per_channel(-0.2, 0.2, (C,)), axis=-1)
    return _out(n, n.op("Transpose", normed, perm=[0, 3, 1, 2]))


def layer_norm_after_offset(n: Net, a: str) -> str:
    """A scalar added to every channel fills the removed ones too."""
    nhwc = n.op("Transpose", n.op("Add", a, n.const(0.5)), perm=[0, 2, 3, 1])
    normed = n.op("LayerNormalization", nhwc, n.per_channel(0.5, 1.5, (C,)), n.per_channel(-0.2, 0.2, (C,)), axis=-1)
    return _out(n, n.op("Transpose", normed, perm=[0, 3, 1, 2]))


def _strided_read(n: Net, a: str, order: np.ndarray) -> str:
    """The dynamo exporter's AdaptiveAvgPool2d to 1x1: a mean, then an as_strided that reads
    element (i, c) of the flat mean at i * C + order[c] (arange: every element in place)."""
    mean = n.op("ReduceMean", a, n.ints(2, 3), keepdims=1)
    flat = n.op("Reshape", mean, n.ints(-1))
    batch = n.op("Squeeze", n.op("Shape", "x", start=0, end=1))
    starts = n.op("Mul", n.op("Range", n.const(0, np.int64), batch, n.const(1, np.int64)), n.const(C, np.int64))
    indices = n.op("Add", n.op("Unsqueeze", starts, n.ints(1, 2, 3)), n.const(order.reshape(1, C, 1, 1), np.int64))
    return n.op("Gather", flat, indices, axis=0)


def strided_identity(n: Net, a: str) -> str:
    return _out(n, _strided_read(n, a, np.arange(C)))


def strided_reversed(n: Net, a: str) -> str:
    """The same arithmetic reading the channels in reverse: no identity."""
    return _out(n, _strided_read(n, a, np.arange(C)[::-1].copy()))


def layer_norm_head(n: Net, a: str) -> str:
    """A classifier head: pooled, flattened to [N, C], LayerNorm over C, Gemm."""
    flat = n.op("Flatten", n.op("GlobalAveragePool", a), axis=1)
    return n.gemm(n.op("LayerNormalization", flat, n.per_channel(0.5, 1.5, (C,)), n.per_channel(-0.2, 0.2, (C,)),
                       axis=-1), C)


def layer_norm_nchw(n: Net, a: str) -> str:
    """LayerNormalization over C, H and W of an NCHW tensor."""
    scale, bias = n.per_channel(0.5, 1.5, (C, 8, 8)), n.per_channel(-0.2, 0.2, (C, 8, 8))
    return _out(n, n.op("LayerNormalization", a, scale, bias, axis=1))


def shape_channel_count_scaled(n: Net, a: str) -> str:
    """a * (Shape(a)[1] / 8): the channel count read by Shape enters the values. It is conv_in's
    filter count whatever the input's size, so canonicalization folds it (FoldChannelCounts):
    the pruned model scales by the teacher's count, as the masked teacher does."""
    count = n.op("Cast", n.op("Gather", n.op("Shape", a), n.ints(1), axis=0), to=TensorProto.FLOAT)
    return _out(n, n.op("Mul", a, n.op("Div", count, n.const([float(C)]))))


def shape_slice_channel_count_scaled(n: Net, a: str) -> str:
    """a * (Shape(a)[1:2] / 8), the count read by a Slice (which is not folded): a barrier."""
    count = n.op("Cast", n.op("Slice", n.op("Shape", a), n.ints(1), n.ints(2)), to=TensorProto.FLOAT)
    return _out(n, n.op("Mul", a, n.op("Div", count, n.const([float(C)]))))


def legacy_chunk(n: Net, a: str) -> str:
    """The legacy torch exporter's `a.chunk(2, dim=1)`: both halves' bounds computed at run time
    from Shape(a)[1] (Add 1, Div 2, Mul 1 and 2), the second half through a conv of its own."""
    half = n.op("Div", n.op("Add", n.op("Gather", n.op("Shape", a), n.ints(1), axis=0), n.ints(1)), n.ints(2))
    first = n.op("Slice", a, n.ints(0), n.op("Mul", half, n.ints(1)), n.ints(1))
    second = n.op("Slice", a, n.op("Mul", half, n.ints(1)), n.op("Mul", half, n.ints(2)), n.ints(1))
    return _out(n, n.op("Concat", first, n.op("Relu", n.conv(second, C // 2, C // 2)), axis=1))


def shape_spatial_size_scaled(n: Net, a: str) -> str:
    """a * (Shape(a)[3] / 8): a spatial size used as a value does not tie the channels."""
    width = n.op("Cast", n.op("Gather", n.op("Shape", a), n.ints(3), axis=0), to=TensorProto.FLOAT)
    return _out(n, n.op("Mul", a, n.op("Div", width, n.const([8.0]))))


def shape_area_filled(n: Net, a: str) -> list[str]:
    """YOLO's anchors as the legacy exporter writes them: H * W read from Shape(a), concatenated
    with a constant into the shape of a ConstantOfShape (a value, but not the channel count)."""
    shape = n.op("Shape", a)
    area = n.op("Mul", n.op("Gather", shape, n.const(2, np.int64), axis=0),
                n.op("Gather", shape, n.const(3, np.int64), axis=0))
    filled = n.op("ConstantOfShape", n.op("Concat", n.op("Unsqueeze", area, n.ints(0)), n.ints(1), axis=0),
                  value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.5]))
    return [_out(n, a), filled]


def size_scaled(n: Net, a: str) -> str:
    """a * (Size(a) / 512): the element count enters the values."""
    count = n.op("Cast", n.op("Size", a), to=TensorProto.FLOAT)
    return _out(n, n.op("Mul", a, n.op("Div", count, n.const(float(C * 64)))))


def size_of_shape(n: Net, a: str) -> str:
    """a / Size(Shape(a)): Size reads a shape tensor (the rank, 4)."""
    rank = n.op("Cast", n.op("Size", n.op("Shape", a)), to=TensorProto.FLOAT)
    return _out(n, n.op("Div", a, rank))


def ms_gelu(n: Net, a: str) -> str:
    return _out(n, n.op("Gelu", a, domain="com.microsoft"))


CHANNELS_KEPT = "reduces the channel axis"
PER_CHANNEL = lambda n: n.per_channel()  # noqa: E731
POSITIVE = lambda n: n.per_channel(0.5, 1.5)  # noqa: E731

CASES: dict[str, Case] = {
    **{op.lower(): Case(unary(op)) for op in (
        "Relu", "Sigmoid", "HardSwish", "Tanh", "Selu", "Softplus", "Exp", "Dropout", "Identity", "Neg", "Abs",
        "Erf", "Softsign", "Floor", "Ceil", "Round", "Sin", "Cos")},
    **{op.lower(): Case(unary(op, positive=True)) for op in ("Sqrt", "Reciprocal", "Log")},
    "leakyrelu": Case(unary("LeakyRelu", alpha=0.1)),
    "hardsigmoid": Case(unary("HardSigmoid", alpha=0.3, beta=0.4)),
    "elu": Case(unary("Elu", alpha=0.7)),
    "celu": Case(unary("Celu", alpha=0.8)),
    "thresholdedrelu": Case(unary("ThresholdedRelu", alpha=0.2)),
    "gelu": Case(unary("Gelu"), opset=20),
    "mish": Case(unary("Mish"), opset=18),
    "clip": Case(clip),
    "cast": Case(cast_round_trip),
    "ms_gelu": Case(ms_gelu, domains=(("com.microsoft", 1),)),
    "maxpool": Case(unary("MaxPool", kernel_shape=[2, 2], strides=[2, 2])),
    "averagepool": Case(unary("AveragePool", kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0)),
    "lppool": Case(unary("LpPool", kernel_shape=[2, 2], strides=[2, 2], p=2)),
    "globalaveragepool": Case(unary("GlobalAveragePool")),
    "globalmaxpool": Case(unary("GlobalMaxPool")),
    "globallppool": Case(unary("GlobalLpPool", p=2)),
    "batchnorm": Case(batch_norm),
    "instancenorm": Case(instance_norm),
    **{f"{op.lower()}_per_channel": Case(with_const(op, PER_CHANNEL)) for op in ("Add", "Sub", "Mul", "Max", "Min")},
    "div_per_channel": Case(with_const("Div", POSITIVE)),
    "pow_per_channel": Case(with_const("Pow", POSITIVE, positive=True)),
    "sum_per_channel": Case(with_const("Sum", PER_CHANNEL)),
    "mean_per_channel": Case(with_const("Mean", PER_CHANNEL)),
    "mul_per_channel_rank3": Case(with_const("Mul", lambda n: n.per_channel(shape=(C, 1, 1)))),
    "add_full_tensor": Case(with_const("Add", lambda n: n.per_channel(shape=(1, C, 8, 8)))),
    "mul_scalar": Case(with_const("Mul", lambda n: n.const(1.5))),
    "sub_scalar_first": Case(with_const("Sub", lambda n: n.const(2.0), const_first=True)),
    "div_by_scalar_rank1": Case(with_const("Div", lambda n: n.const([4.0]))),
    "pow_scalar": Case(with_const("Pow", lambda n: n.const(2.0))),
    "prelu": Case(prelu),
    "residual_add": Case(residual_add),
    "se_gate_mul": Case(se_gate),
    "mean_of_branches": Case(mean_of_branches),
    "sum_of_branches": Case(sum_of_branches),
    "resize_nearest_scales": Case(resize),
    "resize_torch_nearest": Case(resize_torch_nearest),
    "resize_linear_sizes": Case(resize_linear_sizes),
    "resize_runtime_sizes": Case(resize_runtime_sizes),
    "resize_computed_sizes": Case(resize_computed_sizes, barrier="sizes' channel entry is computed at run time"),
    "resize_sizes_axes": Case(resize_sizes_axes, opset=18, torch_refuses="axes/antialias are not supported"),
    "upsample_opset9": Case(upsample, opset=9),
    "pad_spatial": Case(pad_spatial),
    "pad_spatial_axes": Case(pad_spatial_axes, opset=18),
    "pad_channels": Case(pad_channels, barrier="pads the channel axis"),
    "concat_channels": Case(concat_channels),
    "concat_spatial": Case(concat_spatial),
    "concat_batch": Case(concat_batch, barrier="concatenates along the batch axis"),
    "split_channels_num_outputs": Case(split_channels, opset=18),
    "split_channel_sizes": Case(split_channel_sizes),
    "split_spatial": Case(split_spatial),
    "slice_spatial": Case(slice_spatial),
    "slice_channels": Case(slice_channels),
    "flatten_gap_gemm": Case(flatten_gap_gemm),
    "flatten_gemm": Case(flatten_gemm),
    "flatten_axis2": Case(flatten_batch_axis, barrier="flattens across the batch or channel axis"),
    "matmul_2d": Case(matmul_2d),
    # the gemm rule takes 2-D inputs only: a constant MatMul on the last axis of a 3-D/4-D tensor
    # leaves the channels where they are, but the analysis keeps them (a missed opportunity)
    "matmul_4d": Case(matmul_4d, barrier="input is not 2-D"),
    "matmul_3d": Case(matmul_3d, barrier="input is not 2-D"),
    "reshape_3d": Case(reshape_3d),
    "reshape_runtime_shape": Case(reshape_runtime),
    "channel_shuffle": Case(channel_shuffle),
    "gather_channels": Case(gather_channels),
    "gather_channel_twice": Case(gather_channel_twice, barrier="gathers a channel more than once"),
    "gather_width": Case(gather_width),
    "transpose_hw": Case(transpose_hw),
    # channels tracked on axis 1 only: an NHWC round trip is kept (a missed opportunity, correct)
    "transpose_nhwc_round_trip": Case(transpose_nhwc),
    "convnext_mlp": Case(convnext_mlp),
    "channels_last_reduce": Case(channels_last_reduce, barrier="reads a channels-last tensor", opset=18),
    "unsqueeze_squeeze": Case(unsqueeze_squeeze),
    "unsqueeze_channel_axis": Case(unsqueeze_channel_axis, barrier="touches the batch or channel axis"),
    "conv_transpose": Case(conv_transpose),
    **{f"{op.lower()}_spatial": Case(reduce(op), opset=18) for op in (
        "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL1", "ReduceL2")},
    "reduceprod_width": Case(reduce("ReduceProd", axes=(3,), positive=True), opset=18),
    "reducemean_spatial_no_keepdims": Case(reduce("ReduceMean", keepdims=0), opset=18),
    "reducemean_channels": Case(reduce("ReduceMean", axes=(1,)), barrier=CHANNELS_KEPT, opset=18),
    "reducesum_channels": Case(reduce("ReduceSum", axes=(-3,)), barrier=CHANNELS_KEPT, opset=18),
    "size_scaled": Case(size_scaled, barrier="its element count counts the channels"),
    "shape_channel_count_scaled": Case(shape_channel_count_scaled),
    "shape_slice_channel_count_scaled": Case(shape_slice_channel_count_scaled,
                                             barrier="the channel count it reads is used as a value"),
    "legacy_chunk": Case(legacy_chunk),
    "shape_spatial_size_scaled": Case(shape_spatial_size_scaled),
    "size_of_shape": Case(size_of_shape),
    "shape_area_filled": Case(shape_area_filled),
    "grouped_conv": Case(grouped_conv),
    "grouped_chain": Case(grouped_chain),
    "channel_multiplier": Case(channel_multiplier),
    "depthwise_conv": Case(depthwise_conv),
    # LayerNormalization over the channels prunes where the removed channels were zero in the
    # masked original (padded back as zeros), and is kept where they may not be, or where it
    # normalizes over more than the channels (C, H and W of an NCHW tensor)
    "layernorm_nhwc": Case(layer_norm_nhwc),
    "layernorm_stream": Case(layer_norm_stream),
    "layernorm_after_sigmoid": Case(layer_norm_after_sigmoid, barrier="whose removed values may be non-zero"),
    "layernorm_after_offset": Case(layer_norm_after_offset, barrier="whose removed values may be non-zero"),
    # the dynamo exporter's in-place as_strided after a mean is the mean itself (canonicalized)
    "strided_identity": Case(strided_identity, opset=18),
    "strided_reversed": Case(strided_reversed, barrier="reshape mixes the batch axis", opset=18),
    "layernorm_head": Case(layer_norm_head),
    "layernorm_nchw": Case(layer_norm_nchw, barrier="normalizes over more than the channels"),
}


def check_torch_view(pruned: PrunedModel, feed: dict[str, np.ndarray]) -> None:
    """The torch view of the pruned model computes what ONNX Runtime computes."""
    view = TorchGraph(pruned.model).eval()
    with torch.no_grad():
        out = view(*(torch.from_numpy(feed[name]) for name in view.input_names))
    got = [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]
    want = cpu_session(pruned.model).run(None, feed)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        error = float(np.max(np.abs(g - w)) / max(float(np.max(np.abs(w))), 1e-12))
        assert error <= TORCH_TOLERANCE, f"torch view differs from ONNX Runtime by {error:.2e}"


def _group_of_a(prepared: PreparedModel) -> ChannelGroup:
    (group_id,) = prepared.analysis.group_of_tensor("a")
    return prepared.analysis.groups[group_id]


@pytest.mark.parametrize("name", [pytest.param(name, marks=case.marks) for name, case in CASES.items()])
def test_one_op(name: str) -> None:
    case = CASES[name]
    source = case.model()
    prepared = prepare(source)
    feed = dummy_feed(prepared.model, prepared.feed_shapes, seed=7)
    check_rate_zero(prepared, feed)
    group = _group_of_a(prepared)
    if case.barrier is None:
        assert group.prunable, group.kept_reason
    else:
        assert not group.prunable and case.barrier in group.kept_reason, group.kept_reason
    for granularity in ("module", "group"):
        pruned = prune_prepared(prepared, resolve_config(prepared, granularity, 0.5), granularity)
        check_equivalent(prepared, pruned, feed, source)
        # module granularity keeps a group that leaves its module (a residual branch's)
        if case.barrier is None and (granularity == "group" or prepared.units(granularity).units):
            assert pruned.params < prepared.params
        if case.torch_refuses is None:
            check_torch_view(pruned, feed)
        else:
            with pytest.raises(UnsupportedOpError, match=case.torch_refuses):
                TorchGraph(pruned.model)


def _op_types(model: onnx.ModelProto) -> set[str | tuple[str, str]]:
    """Op types of the standard domain, (domain, op type) of others (DOMAIN_RULES' keys)."""
    return {node.op_type if node.domain in ("", "ai.onnx") else (node.domain, node.op_type)
            for node in model.graph.node}


def test_matrix_covers_every_rule() -> None:
    """Every op the analysis has a rule for appears in some case (a new rule needs a case)."""
    covered = set().union(*(_op_types(case.model()) for case in CASES.values()))
    assert set(RULES) - covered == set()
    assert set(DOMAIN_RULES) - covered == set()


def test_a_pruned_layernorm_counts_what_it_holds_when_read_again() -> None:
    """The pruned LayerNorm pads its cut scale and bias back at run time: the pruned model read
    again (canonicalized) has the parameters apply counted, not the padding zeros, and its
    outputs are still exact."""
    prepared = prepare(CASES["layernorm_stream"].model())
    pruned = prune_prepared(prepared, resolve_config(prepared, "group", 0.5), "group")
    again = prepare(pruned.model)
    assert again.params == pruned.params < prepared.params
    feed = dummy_feed(prepared.model, prepared.feed_shapes, seed=7)
    for got, want in zip(cpu_session(again.model).run(None, feed), cpu_session(pruned.model).run(None, feed)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _c2f(n: Net, a: str) -> str:
    """A YOLO C2f: conv_in's channels split in halves; the second runs through a residual
    bottleneck (its channels also the bottleneck conv's filters); both halves and the
    bottleneck's output are concatenated for conv_out."""
    first, second = n.op("Split", a, n.ints(C // 2, C // 2), outputs=2, axis=1)
    bottleneck = n.op("Add", second, n.conv(n.op("Relu", n.conv(second, C // 2, C // 2)), C // 2, C // 2))
    return n.conv(n.op("Concat", first, second, bottleneck, axis=1), 4, 3 * C // 2)


def test_a_split_group_loses_the_same_share_of_every_part() -> None:
    """The second half's channels carry two filters each (conv_in's and the bottleneck's), so by
    summed L1 alone the first half would lose them all but one; each half loses half, as
    Torch-Pruning prunes a C2f once its split conv is two convs."""
    net = Net()
    source = net.model([_c2f(net, "a")], 17, {})
    prepared = prepare(source)
    pruned = prune_prepared(prepared, resolve_config(prepared, "group", 0.5), "group")
    cut = {entry["tensor"]: entry["keep"] for entry in pruned.slices if entry["axis"] == 0}
    kept = cut[next(node.input[1] for node in source.graph.node if node.name == "conv_in")]
    assert sum(k < C // 2 for k in kept) == sum(k >= C // 2 for k in kept) == C // 4
    check_equivalent(prepared, pruned, dummy_feed(prepared.model, prepared.feed_shapes, seed=7), source)
