"""ONNX op -> torch functional calls, one small converter per op, for the fx code that
`TorchGraph` generates. A converter sees its inputs as build-time values: a constant tensor
(folded), a `Sym` (a small int vector such as a shape, known element by element, where an
element may be a runtime int such as the batch size) or an fx node (a runtime tensor).
Constant inputs are folded by `NodeContext.call`, so shape subgraphs cost nothing at run time.
`NodeContext` is the interface a converter sees; torch_graph implements it (and imports this
module, never the other way round)."""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, Union

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import fx


@dataclass
class Sym:
    """An int64 vector (or scalar) known element-wise at build time; an element is an int or
    an fx node that yields an int at run time (e.g. `x.size(0)`)."""

    items: list[Any]
    scalar: bool = False

    @property
    def static(self) -> bool:
        return not any(isinstance(item, fx.Node) for item in self.items)


Value = Union[torch.Tensor, Sym, fx.Node]


class NodeContext(Protocol):
    """What a converter sees of one ONNX node and of the fx graph being built."""

    node: onnx.NodeProto
    op: str
    opset: int

    def fail(self, reason: str) -> None:
        """Raise UnsupportedOpError naming the node and the reason."""

    def attr(self, name: str, default: Any = ...) -> Any:
        """The attribute's value (strings decoded, lists as lists); without a default, a missing
        one fails."""

    def x(self, index: int, const: bool = False) -> Value | None:
        """Input `index` (None when absent); `const` reads a float initializer as a constant."""

    def tensor(self, value: Value) -> Value:
        """A Sym turned into an int64 tensor (or fx node); anything else as it is."""

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """fn(*args) now when no argument is a runtime value (constant folding), else an fx node."""

    def shape(self, index: int) -> list[int | None] | None: ...

    def rank(self, index: int) -> int | None: ...

    def dim(self, index: int, axis: int) -> int | fx.Node: ...

    def dtype(self, index: int) -> torch.dtype | None: ...

    def is_int(self, index: int) -> bool: ...

    def training(self) -> fx.Node: ...

    def device(self) -> fx.Node | None: ...

    def is_running_stat(self, index: int) -> bool: ...


Converter = Callable[[NodeContext], Sequence[Any]]


class NeedsConstant(Exception):
    """A converter needs a build-time constant (e.g. Reshape's shape) and got a runtime tensor."""


# ---------------------------------------------------------------------------------------------
# value helpers


def as_sym(value: Value | None) -> Sym | None:
    """A Sym view of an int constant or Sym (None for anything else)."""
    if isinstance(value, Sym):
        return value
    if isinstance(value, torch.Tensor) and not value.is_floating_point() and value.dim() <= 1 and value.dtype != torch.bool:
        return Sym([int(v) for v in value.reshape(-1).tolist()], scalar=value.dim() == 0)
    return None


def ints(value: Value | None, default: list[int] | None = None) -> list[int] | None:
    """A build-time int list (axes, pads, split sizes); raises NeedsConstant for runtime values."""
    if value is None:
        return default
    sym = as_sym(value)
    if sym is None or not sym.static:
        raise NeedsConstant
    return list(sym.items)


def floats(value: Value | None) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return [float(v) for v in value.reshape(-1).tolist()]
    raise NeedsConstant


def shape_items(value: Value) -> list[Any]:
    """Ints and runtime-int nodes for a shape argument."""
    sym = as_sym(value)
    if sym is None:
        raise NeedsConstant
    return list(sym.items)


def onnx_dtype(code: int) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype=onnx.helper.tensor_dtype_to_np_dtype(code))).dtype


def tensor_from_attr(tensor: onnx.TensorProto) -> torch.Tensor:
    return torch.from_numpy(np.array(numpy_helper.to_array(tensor)))


# ---------------------------------------------------------------------------------------------
# runtime helpers (called from generated code when a value is only known at run time)


def int_tensor(items: list[Any], device: torch.device | None) -> torch.Tensor:
    return torch.tensor(items, dtype=torch.int64, device=device)


def reshape_dynamic(x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    dims = [x.shape[i] if int(d) == 0 else int(d) for i, d in enumerate(shape.tolist())]
    return x.reshape(dims)


def expand(x: torch.Tensor, shape: Sequence[int] | torch.Tensor) -> torch.Tensor:
    dims = shape.tolist() if isinstance(shape, torch.Tensor) else list(shape)
    return x.expand(torch.broadcast_shapes(x.shape, tuple(int(d) for d in dims)))


def shape_tensor(x: torch.Tensor, start: int, end: int | None) -> torch.Tensor:
    return torch.tensor(x.shape[start:end], dtype=torch.int64, device=x.device)


def gather(x: torch.Tensor, indices: torch.Tensor, axis: int) -> torch.Tensor:
    flat = indices.reshape(-1).to(x.device)
    flat = torch.where(flat < 0, flat + x.shape[axis], flat)
    picked = torch.index_select(x, axis, flat)
    axis = axis % x.dim()
    return picked.reshape(x.shape[:axis] + indices.shape + x.shape[axis + 1:])


def flatten(x: torch.Tensor, axis: int) -> torch.Tensor:
    axis = axis % x.dim() if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), -1)


def coerced_softmax(x: torch.Tensor, axis: int, log: bool) -> torch.Tensor:
    """Softmax of opset < 13: over all dims from `axis` on, flattened."""
    flat = flatten(x, axis)
    out = F.log_softmax(flat, dim=1) if log else F.softmax(flat, dim=1)
    return out.reshape(x.shape)


def unsqueeze(x: torch.Tensor, axes: list[int]) -> torch.Tensor:
    rank = x.dim() + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = x.unsqueeze(axis)
    return x


def squeeze(x: torch.Tensor, axes: list[int]) -> torch.Tensor:
    return torch.squeeze(x, tuple(a % x.dim() for a in axes))


def reduce_all(x: torch.Tensor, fn: Callable[..., torch.Tensor], keepdim: bool) -> torch.Tensor:
    return fn(x, dim=tuple(range(x.dim())), keepdim=keepdim)


def reduce_l1(x: torch.Tensor, dim: Sequence[int], keepdim: bool) -> torch.Tensor:
    return torch.sum(torch.abs(x), dim=tuple(dim), keepdim=keepdim)


def reduce_l2(x: torch.Tensor, dim: Sequence[int], keepdim: bool) -> torch.Tensor:
    return torch.sqrt(torch.sum(x * x, dim=tuple(dim), keepdim=keepdim))


def reduce_prod(x: torch.Tensor, dim: Sequence[int], keepdim: bool) -> torch.Tensor:
    """torch.prod takes one dim at a time: reduce the axes from the last one down."""
    for axis in sorted((a % x.dim() for a in dim), reverse=True):
        x = torch.prod(x, dim=axis, keepdim=keepdim)
    return x


def thresholded_relu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.where(x > alpha, x, torch.zeros_like(x))


def lp_pool(x: torch.Tensor, p: int, kernel: list[int], strides: list[int], pads: list[int],
            ceil_mode: bool) -> torch.Tensor:
    """(sum over the window of |x|^p)^(1/p); zero padding adds nothing to the sum."""
    spatial = len(kernel)
    powered = torch.abs(x) ** p
    if any(pads):
        powered = F.pad(powered, _torch_pads(pads))
    fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[spatial - 1]
    window = 1
    for size in kernel:
        window *= size
    return (fn(powered, kernel, strides, 0, ceil_mode, True) * window) ** (1.0 / p)


def global_lp_pool(x: torch.Tensor, p: int) -> torch.Tensor:
    return torch.sum(torch.abs(x) ** p, dim=tuple(range(2, x.dim())), keepdim=True) ** (1.0 / p)


def size_of(x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(x.numel(), dtype=torch.int64, device=x.device)


def average_pool_padded(x: torch.Tensor, pads: list[int], kernel: list[int], strides: list[int],
                        ceil_mode: bool, count_include_pad: bool) -> torch.Tensor:
    """AveragePool with asymmetric pads: pad with zeros, pool, and divide by the real count."""
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[len(kernel) - 1]
    padded = F.pad(x, pads)
    summed = pool(padded, kernel, strides, 0, ceil_mode, True)
    if count_include_pad:
        return summed
    ones = F.pad(torch.ones_like(x[:1, :1]), pads)
    return summed / pool(ones, kernel, strides, 0, ceil_mode, True)


def layer_norm(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, axis: int, eps: float) -> torch.Tensor:
    """LayerNormalization over the dims from `axis` on, its scale and bias broadcast to them."""
    shape = tuple(x.shape[axis:])
    return F.layer_norm(x, shape, scale.expand(shape), None if bias is None else bias.expand(shape), eps)


def batch_norm_untracked(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, weight: torch.Tensor | None,
                         bias: torch.Tensor | None, training: bool, eps: float) -> torch.Tensor:
    """BatchNorm whose mean/var are not running-stat buffers (computed, or tied to weights by
    the exporter): batch statistics in train mode without updating anything, the given
    statistics otherwise."""
    if training:
        return F.batch_norm(x, None, None, weight, bias, True, 0.0, eps)
    return F.batch_norm(x, mean.detach(), var.detach(), weight, bias, False, 0.0, eps)


def local_response_norm(x: torch.Tensor, size: int, alpha: float, beta: float, bias: float) -> torch.Tensor:
    """ONNX LRN: the window over channels is [c - (size-1)//2, c + ceil((size-1)/2)] (torch's
    own centres even windows the other way)."""
    before = (size - 1) // 2
    square = (x * x).reshape(x.shape[0], 1, x.shape[1], -1)
    square = F.pad(square, [0, 0, before, size - 1 - before])
    mean = F.avg_pool2d(square, (size, 1), stride=1).reshape(x.shape)
    return x / (bias + alpha * mean).pow(beta)


# ---------------------------------------------------------------------------------------------
# converters


def _spatial_pads(ctx: NodeContext, spatial: int, kernel: list[int], strides: list[int], dilations: list[int]) -> list[int]:
    """ONNX pads (begins then ends) for Conv/pool, auto_pad resolved from static input dims."""
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        return ctx.attr("pads", [0] * (2 * spatial))
    if auto_pad == "VALID":
        return [0] * (2 * spatial)
    shape = ctx.shape(0)
    if shape is None or any(d is None for d in shape[2:]):
        ctx.fail(f"auto_pad={auto_pad} needs static spatial input dims")
    begins, ends = [], []
    for size, k, s, d in zip(shape[2:], kernel, strides, dilations):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else total - small)
        ends.append(total - small if auto_pad == "SAME_UPPER" else small)
    return begins + ends


def _torch_pads(pads: list[int]) -> list[int]:
    """ONNX [b1, b2, ..., e1, e2, ...] -> F.pad's [bn, en, ..., b1, e1]."""
    half = len(pads) // 2
    out: list[int] = []
    for axis in reversed(range(half)):
        out += [pads[axis], pads[axis + half]]
    return out


def _conv_geometry(ctx: NodeContext) -> tuple[int, list[int], list[int], list[int]]:
    """(spatial rank, kernel, strides, dilations) of a Conv/ConvTranspose node."""
    w_shape = ctx.shape(1)
    if w_shape is None:
        ctx.fail("weight rank unknown")
    spatial = len(w_shape) - 2
    return (spatial, ctx.attr("kernel_shape", w_shape[2:]), ctx.attr("strides", [1] * spatial),
            ctx.attr("dilations", [1] * spatial))


def _conv(ctx: NodeContext) -> list[Any]:
    x, w = ctx.x(0), ctx.x(1)
    bias = ctx.x(2)
    spatial, kernel, strides, dilations = _conv_geometry(ctx)
    pads = _spatial_pads(ctx, spatial, kernel, strides, dilations)
    fn = (F.conv1d, F.conv2d, F.conv3d)[spatial - 1]
    if pads[:spatial] != pads[spatial:]:
        x = ctx.call(F.pad, x, _torch_pads(pads))
        pads = [0] * (2 * spatial)
    return [ctx.call(fn, x, w, bias, strides, pads[:spatial], dilations, ctx.attr("group", 1))]


def _conv_transpose(ctx: NodeContext) -> list[Any]:
    x, w, bias = ctx.x(0), ctx.x(1), ctx.x(2)
    spatial, kernel, strides, dilations = _conv_geometry(ctx)
    output_padding = ctx.attr("output_padding", [0] * spatial)
    pads = ctx.attr("pads", [0] * (2 * spatial))
    output_shape = ctx.attr("output_shape", None)
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if output_shape is not None or auto_pad not in ("NOTSET", ""):
        shape = ctx.shape(0)
        if shape is None or any(d is None for d in shape[2:]):
            ctx.fail("output_shape/auto_pad need static spatial input dims")
        if output_shape is None:
            output_shape = [d * s for d, s in zip(shape[2:], strides)] if auto_pad != "VALID" else None
        if output_shape is not None:
            begins, ends = [], []
            for i in range(spatial):
                total = strides[i] * (shape[2 + i] - 1) + output_padding[i] + (kernel[i] - 1) * dilations[i] + 1 - output_shape[-spatial + i]
                upper = auto_pad == "SAME_UPPER"  # the spec gives the odd pixel to the start otherwise
                begins.append(total // 2 if upper else total - total // 2)
                ends.append(total - total // 2 if upper else total // 2)
            pads = begins + ends
    fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[spatial - 1]
    begins, ends = pads[:spatial], pads[spatial:]
    common = [min(b, e) for b, e in zip(begins, ends)]
    y = ctx.call(fn, x, w, bias, strides, common, output_padding, ctx.attr("group", 1), dilations)
    if begins != ends:
        crop = [slice(None), slice(None)] + [slice(b - c, (-(e - c)) or None) for b, e, c in zip(begins, ends, common)]
        y = ctx.call(operator.getitem, y, tuple(crop))
    return [y]


def _pool(ctx: NodeContext) -> list[Any]:
    x = ctx.x(0)
    kernel = ctx.attr("kernel_shape")
    spatial = len(kernel)
    strides = ctx.attr("strides", [1] * spatial)
    dilations = ctx.attr("dilations", [1] * spatial)
    pads = _spatial_pads(ctx, spatial, kernel, strides, dilations)
    ceil_mode = bool(ctx.attr("ceil_mode", 0))
    symmetric = pads[:spatial] == pads[spatial:] and all(p <= k // 2 for p, k in zip(pads, kernel))
    if len(ctx.node.output) > 1 and ctx.node.output[1]:
        ctx.fail("the Indices output is not supported")
    if ctx.op == "MaxPool":
        fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[spatial - 1]
        if not symmetric:
            x = ctx.call(F.pad, x, _torch_pads(pads), "constant", float("-inf"))
            pads = [0] * (2 * spatial)
        return [ctx.call(fn, x, kernel, strides, pads[:spatial], dilations, ceil_mode)]
    if dilations != [1] * spatial:
        ctx.fail("dilated AveragePool is not supported")
    count_include_pad = bool(ctx.attr("count_include_pad", 0))
    if not symmetric:
        return [ctx.call(average_pool_padded, x, _torch_pads(pads), kernel, strides, ceil_mode, count_include_pad)]
    fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[spatial - 1]
    return [ctx.call(fn, x, kernel, strides, pads[:spatial], ceil_mode, count_include_pad)]


def _lp_pool(ctx: NodeContext) -> list[Any]:
    kernel = ctx.attr("kernel_shape")
    spatial = len(kernel)
    strides = ctx.attr("strides", [1] * spatial)
    dilations = ctx.attr("dilations", [1] * spatial)
    if dilations != [1] * spatial:
        ctx.fail("dilated LpPool is not supported")
    pads = _spatial_pads(ctx, spatial, kernel, strides, dilations)
    return [ctx.call(lp_pool, ctx.x(0), ctx.attr("p", 2), kernel, strides, pads, bool(ctx.attr("ceil_mode", 0)))]


def _global_lp_pool(ctx: NodeContext) -> list[Any]:
    return [ctx.call(global_lp_pool, ctx.x(0), ctx.attr("p", 2))]


def _size(ctx: NodeContext) -> list[Any]:
    x = ctx.x(0)
    if isinstance(x, Sym):  # the Size of a shape tensor: its length, known now
        return [Sym([1 if x.scalar else len(x.items)], scalar=True)]
    return [ctx.call(size_of, x)]


def _global_pool(ctx: NodeContext) -> list[Any]:
    rank = ctx.rank(0)
    if rank is None:
        ctx.fail("input rank unknown")
    fn = torch.mean if ctx.op == "GlobalAveragePool" else torch.amax
    return [ctx.call(fn, ctx.x(0), list(range(2, rank)), True)]


def _gemm(ctx: NodeContext) -> list[Any]:
    a, b, c = ctx.x(0), ctx.x(1), ctx.x(2)
    alpha, beta = ctx.attr("alpha", 1.0), ctx.attr("beta", 1.0)
    trans_a, trans_b = ctx.attr("transA", 0), ctx.attr("transB", 0)
    if trans_a:
        a = ctx.call(torch.t, a)
    if trans_b and alpha == 1.0 and (c is None or (beta == 1.0 and ctx.rank(2) == 1)):
        return [ctx.call(F.linear, a, b, c)]
    if trans_b:
        b = ctx.call(torch.t, b)
    y = ctx.call(torch.matmul, a, b)
    if alpha != 1.0:
        y = ctx.call(operator.mul, y, alpha)
    if c is not None:
        y = ctx.call(operator.add, y, c if beta == 1.0 else ctx.call(operator.mul, c, beta))
    return [y]


_BINARY = {"Add": operator.add, "Sub": operator.sub, "Mul": operator.mul, "Div": operator.truediv, "Pow": torch.pow}


def _sym_binary(fn: Callable[[Any, Any], Any], a: Sym, b: Sym, ctx: NodeContext) -> Sym:
    if len(a.items) != len(b.items) and 1 not in (len(a.items), len(b.items)):
        ctx.fail("shape arithmetic on vectors of different lengths")
    size = max(len(a.items), len(b.items))
    left = a.items * size if len(a.items) == 1 else a.items
    right = b.items * size if len(b.items) == 1 else b.items
    return Sym([ctx.call(fn, p, q) for p, q in zip(left, right)], scalar=a.scalar and b.scalar)


def _binary(ctx: NodeContext) -> list[Any]:
    # a Pow exponent is a constant, not a weight: its gradient, x^p log x, is NaN for any x < 0
    a, b = ctx.x(0), ctx.x(1, const=ctx.op == "Pow")
    fn = _BINARY[ctx.op]
    sa, sb = as_sym(a), as_sym(b)
    if sa is not None and sb is not None and (isinstance(a, Sym) or isinstance(b, Sym)):
        int_fn = operator.floordiv if ctx.op == "Div" else fn
        return [_sym_binary(int_fn, sa, sb, ctx)]
    a, b = ctx.tensor(a), ctx.tensor(b)
    if ctx.op == "Div" and ctx.is_int(0):
        return [ctx.call(torch.div, a, b, rounding_mode="trunc")]
    return [ctx.call(fn, a, b)]


def _variadic(ctx: NodeContext) -> list[Any]:
    fn = {"Sum": operator.add, "Mean": operator.add, "Max": torch.maximum, "Min": torch.minimum}[ctx.op]
    values = [ctx.x(i) for i in range(len(ctx.node.input))]
    out = values[0]
    for value in values[1:]:
        out = ctx.call(fn, out, value)
    if ctx.op == "Mean":
        out = ctx.call(operator.truediv, out, float(len(values)))
    return [out]


def _unary(fn: Callable[..., Any], **fixed: Any) -> Converter:
    def convert(ctx: NodeContext) -> list[Any]:
        return [ctx.call(fn, ctx.x(0), **fixed)]
    return convert


def _clip(ctx: NodeContext) -> list[Any]:
    if ctx.opset < 11:
        low, high = ctx.attr("min", None), ctx.attr("max", None)
    else:
        low, high = ctx.x(1, const=True), ctx.x(2, const=True)
        low = float(low) if isinstance(low, torch.Tensor) else low
        high = float(high) if isinstance(high, torch.Tensor) else high
    if low == 0.0 and high is None:
        return [ctx.call(F.relu, ctx.x(0))]
    return [ctx.call(torch.clamp, ctx.x(0), low, high)]


def _leaky_relu(ctx: NodeContext) -> list[Any]:
    return [ctx.call(F.leaky_relu, ctx.x(0), ctx.attr("alpha", 0.01))]


def _prelu(ctx: NodeContext) -> list[Any]:
    x, slope = ctx.x(0), ctx.x(1)
    return [ctx.call(torch.where, ctx.call(torch.ge, x, 0), x, ctx.call(operator.mul, x, slope))]


def _hard_sigmoid(ctx: NodeContext) -> list[Any]:
    alpha, beta = ctx.attr("alpha", 0.2), ctx.attr("beta", 0.5)
    if abs(alpha - 1 / 6) < 1e-7 and beta == 0.5:
        return [ctx.call(F.hardsigmoid, ctx.x(0))]
    scaled = ctx.call(torch.add, ctx.call(torch.mul, ctx.x(0), alpha), beta)
    return [ctx.call(torch.clamp, scaled, 0.0, 1.0)]


def _elu(ctx: NodeContext) -> list[Any]:
    return [ctx.call(F.elu, ctx.x(0), ctx.attr("alpha", 1.0))]


def _selu(ctx: NodeContext) -> list[Any]:
    alpha, gamma = ctx.attr("alpha", 1.67326319217681884765625), ctx.attr("gamma", 1.05070102214813232421875)
    return [ctx.call(operator.mul, ctx.call(F.elu, ctx.x(0), alpha), gamma)]


def _celu(ctx: NodeContext) -> list[Any]:
    return [ctx.call(F.celu, ctx.x(0), ctx.attr("alpha", 1.0))]


def _thresholded_relu(ctx: NodeContext) -> list[Any]:
    return [ctx.call(thresholded_relu, ctx.x(0), ctx.attr("alpha", 1.0))]


def _gelu(ctx: NodeContext) -> list[Any]:
    return [ctx.call(F.gelu, ctx.x(0), approximate=ctx.attr("approximate", "none"))]


def _softmax(ctx: NodeContext) -> list[Any]:
    log = ctx.op == "LogSoftmax"
    axis = ctx.attr("axis", -1 if ctx.opset >= 13 else 1)
    rank = ctx.rank(0)
    if ctx.opset < 13 and not (rank is not None and axis % rank == rank - 1):
        return [ctx.call(coerced_softmax, ctx.x(0), axis, log)]
    return [ctx.call(F.log_softmax if log else F.softmax, ctx.x(0), axis)]


def _batch_norm(ctx: NodeContext) -> list[Any]:
    if any(out for out in ctx.node.output[1:]):
        ctx.fail("running-stat outputs are not supported (train mode follows module.train())")
    momentum = 1.0 - ctx.attr("momentum", 0.9)
    if not (ctx.is_running_stat(3) and ctx.is_running_stat(4)):
        return [ctx.call(batch_norm_untracked, ctx.x(0), ctx.x(3), ctx.x(4), ctx.x(1), ctx.x(2),
                         ctx.training(), ctx.attr("epsilon", 1e-5))]
    return [ctx.call(F.batch_norm, ctx.x(0), ctx.x(3), ctx.x(4), ctx.x(1), ctx.x(2),
                     ctx.training(), momentum, ctx.attr("epsilon", 1e-5))]


def _instance_norm(ctx: NodeContext) -> list[Any]:
    return [ctx.call(F.instance_norm, ctx.x(0), None, None, ctx.x(1), ctx.x(2), True, 0.0, ctx.attr("epsilon", 1e-5))]


def _layer_norm(ctx: NodeContext) -> list[Any]:
    if any(out for out in ctx.node.output[1:]):
        ctx.fail("mean and inverse-deviation outputs are not supported")
    return [ctx.call(layer_norm, ctx.x(0), ctx.x(1), ctx.x(2), ctx.attr("axis", -1), ctx.attr("epsilon", 1e-5))]


def _lrn(ctx: NodeContext) -> list[Any]:
    size = ctx.attr("size")
    alpha, beta, bias = ctx.attr("alpha", 1e-4), ctx.attr("beta", 0.75), ctx.attr("bias", 1.0)
    if size % 2 == 1 and ctx.rank(0) in (3, 4):
        return [ctx.call(F.local_response_norm, ctx.x(0), size, alpha, beta, bias)]
    return [ctx.call(local_response_norm, ctx.x(0), size, alpha, beta, bias)]


def _axes(ctx: NodeContext, index: int) -> list[int] | None:
    """Axes from the attribute (older opsets) or from input `index` (newer ones)."""
    if len(ctx.node.input) > index and ctx.node.input[index]:
        return ints(ctx.x(index, const=True))
    return ctx.attr("axes", None)


def _reduce(ctx: NodeContext) -> list[Any]:
    fn = {"ReduceMean": torch.mean, "ReduceMax": torch.amax, "ReduceSum": torch.sum, "ReduceMin": torch.amin,
          "ReduceL1": reduce_l1, "ReduceL2": reduce_l2, "ReduceProd": reduce_prod}[ctx.op]
    axes = _axes(ctx, 1)
    keepdim = bool(ctx.attr("keepdims", 1))
    if not axes:
        if axes is not None and ctx.attr("noop_with_empty_axes", 0):
            return [ctx.x(0)]
        if ctx.rank(0) is not None:  # every axis
            axes = list(range(ctx.rank(0)))
        elif fn in (reduce_l1, reduce_l2, reduce_prod):  # an fx graph can name torch functions only
            ctx.fail("reducing every axis of a tensor of unknown rank")
        else:
            return [ctx.call(reduce_all, ctx.x(0), fn, keepdim)]
    return [ctx.call(fn, ctx.x(0), axes, keepdim)]


def _resize(ctx: NodeContext) -> list[Any]:
    mode = ctx.attr("mode", "nearest")
    rank = ctx.rank(0)
    if rank is None:
        ctx.fail("input rank unknown")
    if ctx.op == "Upsample":
        scales = ctx.attr("scales", None) if ctx.opset < 9 else floats(ctx.x(1, const=True))
        sizes = None
        transform = "asymmetric"
    else:
        scale_index, size_index = (1, 2) if ctx.opset < 11 else (2, 3)
        scales = floats(ctx.x(scale_index, const=True)) if len(ctx.node.input) > scale_index and ctx.node.input[scale_index] else None
        if scales is not None and not scales:
            scales = None
        sizes = None
        if len(ctx.node.input) > size_index and ctx.node.input[size_index]:
            sizes = shape_items(ctx.x(size_index, const=True))
        transform = ctx.attr("coordinate_transformation_mode", "half_pixel" if ctx.opset >= 11 else "asymmetric")
        if ctx.attr("axes", None) is not None or ctx.attr("antialias", 0):
            ctx.fail("axes/antialias are not supported")
    if scales is not None and scales[:2] != [1.0, 1.0]:
        ctx.fail("resizing the batch or channel axis is not supported")
    kwargs: dict[str, Any] = {}
    if sizes is not None:
        kwargs["size"] = sizes[2:]
    else:
        kwargs["scale_factor"] = scales[2:]
    if mode == "nearest":
        nearest_mode = ctx.attr("nearest_mode", "round_prefer_floor")
        # at an integer upscale a half-pixel centre lies strictly within half a pixel of the
        # source pixel floor picks, so rounding either way is floor (an opset-9 Upsample
        # upgraded to Resize-13 gets the default half_pixel/round_prefer_floor)
        whole = sizes is None and all(scale >= 1 and float(scale).is_integer() for scale in scales[2:])
        half_pixel_round = transform in ("half_pixel", "pytorch_half_pixel") and nearest_mode.startswith("round")
        if ctx.op == "Upsample" or (transform == "asymmetric" and nearest_mode == "floor") or ctx.opset < 11 or \
                (whole and half_pixel_round):
            kwargs["mode"] = "nearest"
        elif transform in ("half_pixel", "pytorch_half_pixel") and nearest_mode == "round_prefer_ceil":
            kwargs["mode"] = "nearest-exact"
        else:
            ctx.fail(f"nearest resize with {transform}/{nearest_mode} is not supported")
    elif mode == "linear":
        kwargs["mode"] = {3: "linear", 4: "bilinear", 5: "trilinear"}.get(rank)
        if transform == "align_corners":
            kwargs["align_corners"] = True
        elif transform in ("half_pixel", "pytorch_half_pixel"):
            kwargs["align_corners"] = False
        else:
            ctx.fail(f"linear resize with {transform} coordinates is not supported")
    else:
        ctx.fail(f"resize mode '{mode}' is not supported")
    return [ctx.call(F.interpolate, ctx.x(0), **kwargs)]


def _pad(ctx: NodeContext) -> list[Any]:
    mode = ctx.attr("mode", "constant")
    if ctx.opset < 11:
        pads, value = ctx.attr("pads"), ctx.attr("value", 0.0)
    else:
        pads = ints(ctx.x(1, const=True))
        value_in = ctx.x(2, const=True) if len(ctx.node.input) > 2 and ctx.node.input[2] else None
        value = float(value_in) if value_in is not None else 0.0
        if len(ctx.node.input) > 3 and ctx.node.input[3]:
            rank = ctx.rank(0)
            if rank is None:
                ctx.fail("input rank unknown")
            axes = [a % rank for a in ints(ctx.x(3, const=True))]
            full = [0] * (2 * rank)
            for i, axis in enumerate(axes):
                full[axis], full[axis + rank] = pads[i], pads[i + len(axes)]
            pads = full
    torch_pads = _torch_pads(pads)
    while torch_pads[-2:] == [0, 0] and len(torch_pads) > 2:
        torch_pads = torch_pads[:-2]
    if mode == "constant":
        return [ctx.call(F.pad, ctx.x(0), torch_pads, "constant", value)]
    torch_mode = {"reflect": "reflect", "edge": "replicate", "wrap": "circular"}.get(mode)
    if torch_mode is None:
        ctx.fail(f"pad mode '{mode}' is not supported")
    return [ctx.call(F.pad, ctx.x(0), torch_pads, torch_mode)]


def _cast(ctx: NodeContext) -> list[Any]:
    dtype = onnx_dtype(ctx.attr("to"))
    x = ctx.x(0)
    if isinstance(x, Sym) and not dtype.is_floating_point and dtype != torch.bool:
        return [x]
    return [ctx.call(torch.Tensor.to, ctx.tensor(x), dtype)]


def _flatten(ctx: NodeContext) -> list[Any]:
    axis = ctx.attr("axis", 1)
    rank = ctx.rank(0)
    if axis == 1 and rank is not None and rank >= 2:
        return [ctx.call(torch.flatten, ctx.x(0), 1)]
    return [ctx.call(flatten, ctx.x(0), axis)]


def _reshape(ctx: NodeContext) -> list[Any]:
    x, shape = ctx.x(0), ctx.x(1, const=True)
    sym = as_sym(shape)
    if sym is None:
        return [ctx.call(reshape_dynamic, ctx.tensor(x), shape)]
    items = list(sym.items)
    if not ctx.attr("allowzero", 0):
        for i, item in enumerate(items):
            if isinstance(item, int) and item == 0:
                items[i] = ctx.dim(0, i)
    data = as_sym(x) if isinstance(x, Sym) else None
    if data is not None and sym.static and len(sym.items) <= 1:
        return [Sym(list(data.items), scalar=sym.items == [])]
    return [ctx.call(torch.reshape, ctx.tensor(x), items)]


def _transpose(ctx: NodeContext) -> list[Any]:
    perm = ctx.attr("perm", None)
    if perm is None:
        rank = ctx.rank(0)
        if rank is None:
            ctx.fail("input rank unknown")
        perm = list(reversed(range(rank)))
    return [ctx.call(torch.permute, ctx.x(0), perm)]


def _concat(ctx: NodeContext) -> list[Any]:
    values = [ctx.x(i) for i in range(len(ctx.node.input)) if ctx.node.input[i]]
    syms = [as_sym(v) for v in values]
    if any(isinstance(v, Sym) for v in values) and all(s is not None for s in syms):
        return [Sym([item for s in syms for item in s.items])]
    return [ctx.call(torch.cat, [ctx.tensor(v) for v in values], ctx.attr("axis"))]


def _split(ctx: NodeContext) -> list[Any]:
    axis = ctx.attr("axis", 0)
    if len(ctx.node.input) > 1 and ctx.node.input[1]:
        sizes = ints(ctx.x(1, const=True))
    else:
        sizes = ctx.attr("split", None)
    count = len(ctx.node.output)
    if sizes is None:
        parts = ctx.call(torch.chunk, ctx.x(0), ctx.attr("num_outputs", count), axis)
    else:
        parts = ctx.call(torch.split, ctx.x(0), sizes, axis)
    return [ctx.call(operator.getitem, parts, i) for i in range(count)]


def _slice(ctx: NodeContext) -> list[Any]:
    if ctx.opset < 10:
        starts, ends = ctx.attr("starts"), ctx.attr("ends")
        axes, steps = ctx.attr("axes", None), None
    else:
        starts = shape_items(ctx.x(1, const=True))
        ends = shape_items(ctx.x(2, const=True))
        axes = ints(ctx.x(3, const=True)) if len(ctx.node.input) > 3 and ctx.node.input[3] else None
        steps = ints(ctx.x(4, const=True)) if len(ctx.node.input) > 4 and ctx.node.input[4] else None
    axes = axes if axes is not None else list(range(len(starts)))
    steps = steps or [1] * len(starts)
    x = ctx.x(0)
    if isinstance(x, Sym):
        start, end, step = starts[0], ends[0], steps[0]
        if not all(isinstance(v, int) for v in (start, end)):
            ctx.fail("dynamic slice of a shape")
        return [Sym(x.items[slice(start, end if step > 0 or end >= -len(x.items) else None, step)])]
    if any(step < 0 for step in steps):
        ctx.fail("negative slice steps are not supported")
    rank = ctx.rank(0)
    if rank is None:
        ctx.fail("input rank unknown")
    index: list[Any] = [slice(None)] * rank
    for start, end, axis, step in zip(starts, ends, axes, steps):
        index[axis % rank] = slice(start, end, step)
    return [ctx.call(operator.getitem, ctx.tensor(x), tuple(index))]


def _squeeze_unsqueeze(ctx: NodeContext) -> list[Any]:
    axes = _axes(ctx, 1)
    x = ctx.x(0)
    if isinstance(x, Sym) and axes is not None:
        if ctx.op == "Unsqueeze" and x.scalar and len(axes) == 1:
            return [Sym(list(x.items))]
        if ctx.op == "Squeeze" and not x.scalar and len(x.items) == 1:
            return [Sym(list(x.items), scalar=True)]
    if ctx.op == "Squeeze":
        if axes is None:
            return [ctx.call(torch.squeeze, ctx.tensor(x))]
        return [ctx.call(squeeze, ctx.tensor(x), axes)]
    if axes is None:
        ctx.fail("Unsqueeze without axes")
    if len(axes) == 1 and axes[0] >= 0:
        return [ctx.call(torch.unsqueeze, ctx.tensor(x), axes[0])]
    return [ctx.call(unsqueeze, ctx.tensor(x), axes)]


def _shape(ctx: NodeContext) -> list[Any]:
    start, end = ctx.attr("start", 0), ctx.attr("end", None)
    rank = ctx.rank(0)
    if rank is None:
        return [ctx.call(shape_tensor, ctx.x(0), start, end)]
    dims = [ctx.dim(0, i) for i in range(rank)]
    return [Sym(dims[start:end])]


def _gather(ctx: NodeContext) -> list[Any]:
    x, indices = ctx.x(0), ctx.x(1)
    axis = ctx.attr("axis", 0)
    data, index = as_sym(x), as_sym(indices)
    if isinstance(x, Sym) and index is not None and index.static and data is not None:
        picked = [data.items[i] for i in index.items]
        return [Sym(picked, scalar=index.scalar)]
    if index is not None and index.static and index.scalar and isinstance(x, fx.Node):
        return [ctx.call(torch.select, x, axis, index.items[0])]
    return [ctx.call(gather, ctx.tensor(x), ctx.tensor(indices), axis)]


def _constant(ctx: NodeContext) -> list[Any]:
    for attribute in ctx.node.attribute:
        value = onnx.helper.get_attribute_value(attribute)
        if attribute.name == "value":
            return [tensor_from_attr(value)]
        if attribute.name in ("value_float", "value_floats"):
            return [torch.tensor(value, dtype=torch.float32)]
        if attribute.name in ("value_int", "value_ints"):
            return [torch.tensor(value, dtype=torch.int64)]
    ctx.fail("only value/value_float(s)/value_int(s) constants are supported")
    return []


def _constant_of_shape(ctx: NodeContext) -> list[Any]:
    fill = ctx.attr("value", None)
    value = tensor_from_attr(fill).reshape(-1) if fill is not None else torch.zeros(1)
    shape = shape_items(ctx.x(0, const=True))
    if all(isinstance(item, int) for item in shape):
        return [torch.full(shape, value.item(), dtype=value.dtype)]
    return [ctx.call(torch.full, shape, value.item(), dtype=value.dtype, device=ctx.device())]


def _identity(ctx: NodeContext) -> list[Any]:
    return [ctx.x(0)]


def _dropout(ctx: NodeContext) -> list[Any]:
    x = ctx.x(0)
    if len(ctx.node.output) > 1 and ctx.node.output[1]:
        return [x, ctx.call(torch.ones_like, ctx.tensor(x), dtype=torch.bool)]
    return [x]


def _expand(ctx: NodeContext) -> list[Any]:
    shape = ctx.x(1, const=True)
    sym = as_sym(shape)
    return [ctx.call(expand, ctx.tensor(ctx.x(0)), sym.items if sym is not None else shape)]


def _equal(ctx: NodeContext) -> list[Any]:
    a, b = as_sym(ctx.x(0)), as_sym(ctx.x(1))
    if a is not None and b is not None and (not a.static or not b.static):
        verdicts = []
        size = max(len(a.items), len(b.items))
        for p, q in zip(a.items * size if len(a.items) == 1 else a.items, b.items * size if len(b.items) == 1 else b.items):
            if isinstance(p, int) and isinstance(q, int):
                verdicts.append(p == q)
            elif isinstance(p, int) and p < 0 or isinstance(q, int) and q < 0:
                verdicts.append(False)  # a runtime dim is never negative
            else:
                break
        else:
            return [torch.tensor(verdicts, dtype=torch.bool).reshape(() if a.scalar and b.scalar else (-1,))]
    return [ctx.call(torch.eq, ctx.tensor(ctx.x(0)), ctx.tensor(ctx.x(1)))]


def _where(ctx: NodeContext) -> list[Any]:
    cond, a, b = ctx.x(0), ctx.x(1), ctx.x(2)
    sa, sb = as_sym(a), as_sym(b)
    if isinstance(cond, torch.Tensor) and cond.dim() <= 1 and sa is not None and sb is not None and (isinstance(a, Sym) or isinstance(b, Sym)):
        flags = cond.reshape(-1).tolist()
        size = max(len(flags), len(sa.items), len(sb.items))
        pick = lambda items, i: items[0] if len(items) == 1 else items[i]  # noqa: E731
        return [Sym([pick(sa.items, i) if pick(flags, i) else pick(sb.items, i) for i in range(size)])]
    return [ctx.call(torch.where, ctx.tensor(cond), ctx.tensor(a), ctx.tensor(b))]


def _range(ctx: NodeContext) -> list[Any]:
    bounds = []
    for i in range(3):
        value = ctx.x(i, const=True)
        sym = as_sym(value)
        bounds.append(sym.items[0] if sym is not None else value)
    if all(isinstance(bound, (int, float, torch.Tensor)) for bound in bounds):
        return [ctx.call(torch.arange, *bounds, dtype=ctx.dtype(0))]
    return [ctx.call(torch.arange, *bounds, dtype=ctx.dtype(0), device=ctx.device())]


def _matmul(ctx: NodeContext) -> list[Any]:
    return [ctx.call(torch.matmul, ctx.x(0), ctx.x(1))]


OPS: dict[str, Converter] = {
    "Conv": _conv, "ConvTranspose": _conv_transpose,
    "Gemm": _gemm, "MatMul": _matmul,
    "Add": _binary, "Sub": _binary, "Mul": _binary, "Div": _binary, "Pow": _binary,
    "Sum": _variadic, "Mean": _variadic, "Max": _variadic, "Min": _variadic,
    "Sqrt": _unary(torch.sqrt), "Neg": _unary(torch.neg), "Reciprocal": _unary(torch.reciprocal),
    "Exp": _unary(torch.exp), "Erf": _unary(torch.erf), "Relu": _unary(F.relu),
    "Sigmoid": _unary(torch.sigmoid), "Tanh": _unary(torch.tanh), "HardSwish": _unary(F.hardswish),
    "Softplus": _unary(F.softplus), "Abs": _unary(torch.abs), "Floor": _unary(torch.floor), "Ceil": _unary(torch.ceil),
    "Log": _unary(torch.log), "Sin": _unary(torch.sin), "Cos": _unary(torch.cos), "Round": _unary(torch.round),
    "Mish": _unary(F.mish), "Softsign": _unary(F.softsign), "Celu": _celu, "ThresholdedRelu": _thresholded_relu,
    "Clip": _clip, "LeakyRelu": _leaky_relu, "PRelu": _prelu, "HardSigmoid": _hard_sigmoid,
    "Elu": _elu, "Selu": _selu, "Gelu": _gelu,
    "Softmax": _softmax, "LogSoftmax": _softmax,
    "BatchNormalization": _batch_norm, "InstanceNormalization": _instance_norm, "LRN": _lrn,
    "LayerNormalization": _layer_norm,
    "MaxPool": _pool, "AveragePool": _pool,
    "GlobalAveragePool": _global_pool, "GlobalMaxPool": _global_pool, "LpPool": _lp_pool, "GlobalLpPool": _global_lp_pool,
    "ReduceMean": _reduce, "ReduceMax": _reduce, "ReduceSum": _reduce, "ReduceMin": _reduce,
    "ReduceL1": _reduce, "ReduceL2": _reduce, "ReduceProd": _reduce,
    "Resize": _resize, "Upsample": _resize, "Pad": _pad,
    "Cast": _cast, "Flatten": _flatten, "Reshape": _reshape, "Transpose": _transpose,
    "Concat": _concat, "Split": _split, "Slice": _slice,
    "Squeeze": _squeeze_unsqueeze, "Unsqueeze": _squeeze_unsqueeze,
    "Shape": _shape, "Size": _size, "Gather": _gather, "Constant": _constant, "ConstantOfShape": _constant_of_shape,
    "Identity": _identity, "Dropout": _dropout, "Expand": _expand, "Equal": _equal, "Where": _where,
    "Range": _range,
}
"""Every op the torch view runs; anything else is an UnsupportedOpError at construction."""

DOMAIN_OPS: dict[tuple[str, str], Converter] = {
    ("com.microsoft", "Gelu"): _gelu,  # ONNX Runtime's contrib Gelu (erf form, no attributes)
}
"""Ops of other domains the torch view runs, by (domain, op type)."""

