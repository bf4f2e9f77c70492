"""A torch view of an ONNX (sub)graph: a generated `torch.fx.GraphModule` whose nodes call torch
functional ops directly (no per-node dispatch), with float initializers as `nn.Parameter`s
named after them, so training updates can be written back into the same initializers by name.

Shape subgraphs (Shape/Gather/Concat/... chains) are folded at build time from shape inference
run with a symbolic batch axis: the batch size stays a runtime value, every other dim that
inference knows becomes a constant. Where symbolic inference loses a tensor's rank (a Reshape
to a target computed at run time, as PaddleOCR exports), the rank comes from concrete shapes
for example input shapes; its dims then stay runtime values, so the view runs at any size."""

from __future__ import annotations

import copy
import re
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import fx, nn

from onnxwootz.core.errors import BadModelError, BadSpecError, UnsupportedOpError
from onnxwootz.core.onnx_helpers import FLOAT_TYPES, input_shapes, onnx_opset, skeleton, without_weights
from onnxwootz.runtime.shapes import static_shapes
from onnxwootz.runtime.torch_ops import (DOMAIN_OPS, OPS, NeedsConstant, NodeContext, Sym, Value, int_tensor,
                                         onnx_dtype)

_MISSING = object()
_RESERVED = {"training", "graph", "meta", "code", "param_names", "onnx_names", "input_names", "output_names"}


ExampleShapes = Mapping[str, Sequence[int]]


def _infer_shapes(model: onnx.ModelProto, inputs: list[onnx.ValueInfoProto]) -> tuple[dict[str, list[int | None]], dict[str, int]]:
    """Shapes (None for a dim known only at run time) and element types of every tensor that
    shape inference reaches, with dim 0 of every graph input made symbolic."""
    probe = without_weights(model)
    del probe.graph.value_info[:]
    real = {value.name for value in inputs}
    for value in probe.graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name in real and len(dims):
            dims[0].Clear()
            dims[0].dim_param = "batch"
    try:
        probe = onnx.shape_inference.infer_shapes(probe, data_prop=True)
    except Exception:  # inference is an optimization; unknown shapes just stay runtime values
        pass
    shapes: dict[str, list[int | None]] = {}
    types: dict[str, int] = {}
    for value in list(probe.graph.input) + list(probe.graph.value_info) + list(probe.graph.output):
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type:
            types[value.name] = tensor_type.elem_type
        if tensor_type.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
        types[init.name] = init.data_type
    return shapes, types


def _example_shapes(model: onnx.ModelProto, example: ExampleShapes | None) -> dict[str, list[int]]:
    """Concrete shapes of the tensors for `example` input shapes (default: the declared ones,
    batch 1); none when the model declares dynamic dims and no example is given, or when they
    cannot be determined (the converter needing a rank then says so)."""
    try:
        feed = {name: list(dims) for name, dims in example.items()} if example is not None else input_shapes(model)
        return static_shapes(model, feed)
    except (BadModelError, BadSpecError):
        return {}


def _sanitize(name: str, taken: set[str]) -> str:
    """A valid, unused attribute name close to the ONNX name."""
    base = re.sub(r"\W", "_", name) or "t"
    if base[0].isdigit():
        base = "t_" + base
    candidate, suffix = base, 1
    while candidate in taken or candidate in _RESERVED or hasattr(fx.GraphModule, candidate) or candidate.startswith("_const"):
        candidate = f"{base}_{suffix}"
        suffix += 1
    taken.add(candidate)
    return candidate


def _running_stat_initializers(model: onnx.ModelProto, inits: dict[str, onnx.TensorProto]) -> set[str]:
    """Initializers used only as BatchNormalization running mean/var, directly or through
    Identity nodes (exporters share equal-valued initializers that way). One that also feeds
    anything else stays a parameter, and the BatchNorms reading it do not update it."""
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, index))

    def terminal_uses(name: str) -> list[tuple[str, int]]:
        uses = []
        for node, index in consumers.get(name, []):
            if node.op_type == "Identity":
                uses += terminal_uses(node.output[0])
            else:
                uses.append((node.op_type, index))
        return uses

    stats = set()
    for name in inits:
        uses = terminal_uses(name)
        if uses and all(op == "BatchNormalization" and index in (3, 4) for op, index in uses):
            stats.add(name)
    return stats


class _Builder:
    """Walks the ONNX nodes once, emitting fx nodes (or folded constants) per output."""

    def __init__(self, model: onnx.ModelProto, example: ExampleShapes | None) -> None:
        self.model = model
        self.opset = onnx_opset(model)
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.inits = {init.name: init for init in model.graph.initializer}
        self.inputs = [value for value in model.graph.input if value.name not in self.inits]
        self.shapes, self.types = _infer_shapes(model, self.inputs)
        self.example, self.ranked = example, False
        self.bn_stats = _running_stat_initializers(model, self.inits)
        self.values: dict[str, Value] = {}
        self.attr_nodes: dict[str, fx.Node] = {}
        self.state_names: dict[str, str] = {}
        self.taken: set[str] = set()
        self.consts: dict[int, tuple[torch.Tensor, fx.Node]] = {}  # by id of the folded tensor
        self.sizes: dict[tuple[str, int], fx.Node] = {}
        self.training_node: fx.Node | None = None
        self.device_node: fx.Node | None = None

    # ---- values
    def placeholder(self, value: onnx.ValueInfoProto) -> None:
        self.values[value.name] = self.graph.placeholder(_sanitize(value.name, self.taken))

    def initializer(self, name: str, const: bool) -> Value:
        init = self.inits[name]
        trainable = init.data_type in FLOAT_TYPES
        if name in self.attr_nodes:
            return self.attr_nodes[name]
        if const and name not in self.bn_stats or not trainable and name not in self.bn_stats:
            return torch.from_numpy(np.array(numpy_helper.to_array(init)))
        tensor = torch.from_numpy(np.array(numpy_helper.to_array(init)))
        target = _sanitize(name, self.taken)
        if name in self.bn_stats:
            self.root.register_buffer(target, tensor)
        else:
            self.root.register_parameter(target, nn.Parameter(tensor))
        self.state_names[name] = target
        self.attr_nodes[name] = self.graph.get_attr(target)
        return self.attr_nodes[name]

    def value(self, name: str, const: bool = False) -> Value | None:
        if not name:
            return None
        if name in self.values:
            return self.values[name]
        if name in self.inits:
            return self.initializer(name, const)
        raise UnsupportedOpError(f"torch view: tensor '{name}' is used before it is produced")

    def constant(self, tensor: torch.Tensor) -> fx.Node:
        """A folded tensor the runtime needs: a non-persistent buffer, read by get_attr."""
        key = id(tensor)  # the entry holds the tensor, so no later tensor gets its id
        if key not in self.consts:
            target = f"_const{len(self.consts)}"
            self.root.register_buffer(target, tensor.detach().clone(), persistent=False)
            self.consts[key] = (tensor, self.graph.get_attr(target))
        return self.consts[key][1]

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """fn(*args) now when nothing is a runtime value (constant folding), else an fx node."""
        has_node = False

        def visit(item: Any) -> Any:
            nonlocal has_node
            if isinstance(item, Sym):
                raise TypeError("a Sym must be materialized before use")
            has_node |= isinstance(item, fx.Node)
            return item

        fx.node.map_aggregate((args, kwargs), visit)
        if not has_node:
            with torch.no_grad():
                return fn(*args, **kwargs)
        args, kwargs = fx.node.map_aggregate(
            (args, kwargs), lambda item: self.constant(item) if isinstance(item, torch.Tensor) else item
        )
        return self.graph.call_function(fn, tuple(args), dict(kwargs))

    def tensor(self, value: Value) -> Value:
        if isinstance(value, Sym):
            shape = () if value.scalar else (len(value.items),)
            if value.static:
                return torch.tensor(value.items, dtype=torch.int64).reshape(shape)
            node = self.graph.call_function(int_tensor, (list(value.items), self.device()))
            return self.graph.call_method("reshape", (node, shape)) if value.scalar else node
        return value

    def shape(self, name: str) -> list[int | None] | None:
        """What inference knows of a tensor's shape; where it lost even the rank, the rank (no
        dim: they may depend on the batch) of its concrete shape for the example inputs, found
        the first time a converter asks (it may run ONNX Runtime)."""
        if name not in self.shapes and not self.ranked:
            self.ranked = True
            for tensor, dims in _example_shapes(self.model, self.example).items():
                self.shapes.setdefault(tensor, [None] * len(dims))
        return self.shapes.get(name)

    def dim(self, name: str, axis: int) -> int | fx.Node:
        value = self.values.get(name)
        if isinstance(value, torch.Tensor):
            return int(value.shape[axis])
        shape = self.shape(name)
        if shape is not None and shape[axis] is not None:
            return int(shape[axis])
        if (name, axis) not in self.sizes:
            self.sizes[(name, axis)] = self.graph.call_method("size", (self.value(name), axis))
        return self.sizes[(name, axis)]

    def device(self) -> fx.Node | None:
        """The device of the first graph input, for tensors created at run time."""
        if self.device_node is None and self.inputs:
            self.device_node = self.graph.call_function(getattr, (self.values[self.inputs[0].name], "device"))
        return self.device_node

    def training(self) -> fx.Node:
        if self.training_node is None:
            self.training_node = self.graph.get_attr("training")
        return self.training_node

    # ---- the walk
    def build(self) -> None:
        for value in self.inputs:
            self.placeholder(value)
        for node in self.model.graph.node:
            standard = node.domain in ("", "ai.onnx")
            converter = OPS.get(node.op_type) if standard else DOMAIN_OPS.get((node.domain, node.op_type))
            label = f"{node.op_type} (node '{node.name}')"
            if converter is None:
                raise UnsupportedOpError(f"torch view: unsupported op {label}")
            try:
                outputs = converter(_NodeContext(self, node))
            except NeedsConstant:
                raise UnsupportedOpError(f"torch view: {label} needs constant shape/axes inputs") from None
            for name, value in zip(node.output, outputs):
                if name:
                    self.values[name] = value
        results = []
        for value in self.model.graph.output:
            result = self.tensor(self.value(value.name))
            results.append(self.constant(result) if isinstance(result, torch.Tensor) else result)
        self.graph.output(results[0] if len(results) == 1 else tuple(results))
        self.graph.eliminate_dead_code()


class _NodeContext(NodeContext):
    """The NodeContext a converter in torch_ops gets: one ONNX node and the builder."""

    def __init__(self, builder: _Builder, node: onnx.NodeProto) -> None:
        self.builder, self.node, self.op, self.opset = builder, node, node.op_type, builder.opset
        self.attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def fail(self, reason: str) -> None:
        raise UnsupportedOpError(f"torch view: unsupported op {self.op} (node '{self.node.name}'): {reason}")

    def attr(self, name: str, default: Any = _MISSING) -> Any:
        if name not in self.attrs:
            if default is _MISSING:
                self.fail(f"attribute '{name}' is required")
            return default
        value = self.attrs[name]
        if isinstance(value, bytes):
            return value.decode()
        if isinstance(value, (list, tuple)):
            return list(value)
        return value

    def x(self, index: int, const: bool = False) -> Value | None:
        """Input `index` (None when absent); `const` reads a float initializer as a constant
        (scales, clip bounds) instead of a trainable parameter."""
        if index >= len(self.node.input):
            return None
        return self.builder.value(self.node.input[index], const)

    def tensor(self, value: Value) -> Value:
        return self.builder.tensor(value)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.builder.call(fn, *args, **kwargs)

    def shape(self, index: int) -> list[int | None] | None:
        value = self.x(index, const=True) if index < len(self.node.input) else None
        if isinstance(value, torch.Tensor):
            return list(value.shape)
        return self.builder.shape(self.node.input[index])

    def rank(self, index: int) -> int | None:
        if index >= len(self.node.input) or not self.node.input[index]:
            return None
        value = self.x(index, const=True)
        if isinstance(value, Sym):
            return 0 if value.scalar else 1
        shape = self.shape(index)
        return None if shape is None else len(shape)

    def dim(self, index: int, axis: int) -> int | fx.Node:
        return self.builder.dim(self.node.input[index], axis)

    def dtype(self, index: int) -> torch.dtype | None:
        value = self.x(index, const=True)
        if isinstance(value, torch.Tensor):
            return value.dtype
        if isinstance(value, Sym):
            return torch.int64
        code = self.builder.types.get(self.node.input[index])
        return onnx_dtype(code) if code else None

    def is_int(self, index: int) -> bool:
        dtype = self.dtype(index)
        return dtype is not None and not dtype.is_floating_point and not dtype.is_complex

    def training(self) -> fx.Node:
        return self.builder.training()

    def device(self) -> fx.Node | None:
        return self.builder.device()

    def is_running_stat(self, index: int) -> bool:
        """Whether input `index` is a running-stat buffer that train mode may update."""
        value = self.x(index)
        return isinstance(value, fx.Node) and value.op == "get_attr" and value.target in {
            self.builder.state_names[name] for name in self.builder.bn_stats if name in self.builder.state_names}


class TorchGraph(fx.GraphModule):
    """`TorchGraph(model, example_shapes)`: the model (or a subgraph model) as a trainable torch
    module. `example_shapes` (input name -> a valid concrete shape, e.g. PreparedModel.feed_shapes)
    is needed only where the model declares dynamic input dims and shape inference alone loses a
    rank; the view is not tied to it and runs at any batch size (and any size the model allows).

    - `forward(*inputs)` takes the real graph inputs in order; returns the output, or a tuple.
    - `param_names`: ONNX initializer name -> attribute name, for every Parameter and every
      BatchNormalization running-stat buffer; `onnx_names` is the reverse map.
    - BatchNormalization follows `train()`/`eval()` like nn.BatchNorm (running stats updated in
      train mode with torch momentum = 1 - ONNX momentum, and torch's unbiased running variance).
    - `to_onnx()` writes the current values back into the same initializers."""

    def __init__(self, model: onnx.ModelProto, example_shapes: ExampleShapes | None = None) -> None:
        builder = _Builder(model, example_shapes)
        builder.build()
        super().__init__(builder.root, builder.graph, class_name="TorchGraph")
        for target in list(self._buffers):
            if target.startswith("_const"):
                self.register_buffer(target, self._buffers[target], persistent=False)
        live = {node.target for node in self.graph.nodes if node.op == "get_attr"}
        self.param_names = {name: target for name, target in builder.state_names.items() if target in live}
        self.onnx_names = {target: name for name, target in self.param_names.items()}
        self.input_names = [value.name for value in builder.inputs]
        self.output_names = [value.name for value in model.graph.output]
        self._onnx = skeleton(model, lambda init: init.name not in self.param_names)
        self._order = [init.name for init in model.graph.initializer]
        self._dtypes = {init.name: init.data_type for init in model.graph.initializer if init.name in self.param_names}

    def to_onnx(self) -> onnx.ModelProto:
        """A copy of the source model with the current parameter and running-stat values in
        their initializers; nothing else changes."""
        kept = {init.name: init for init in self._onnx.graph.initializer}
        out = skeleton(self._onnx, lambda init: False)
        for name in self._order:
            if name in kept:
                out.graph.initializer.append(kept[name])
                continue
            value = getattr(self, self.param_names[name]).detach().cpu()
            if value.dtype == torch.bfloat16:  # numpy has no bfloat16; onnx maps it via ml_dtypes
                value = value.float()
            dtype = onnx.helper.tensor_dtype_to_np_dtype(self._dtypes[name])
            array = value.numpy().astype(dtype, copy=False)  # not ascontiguousarray: it makes a 0-d array 1-d
            tensor = out.graph.initializer.add()
            tensor.name, tensor.data_type = name, self._dtypes[name]
            tensor.dims.extend(array.shape)
            tensor.raw_data = array.tobytes()
        return out

    def __deepcopy__(self, memo: dict[int, Any]) -> TorchGraph:
        copied = super().__deepcopy__(memo)
        for key in ("param_names", "onnx_names", "input_names", "output_names", "_onnx", "_order", "_dtypes"):
            setattr(copied, key, copy.deepcopy(self.__dict__[key], memo))
        return copied


def named_onnx_parameters(view: TorchGraph) -> Iterable[tuple[str, nn.Parameter]]:
    """(initializer name, Parameter) pairs, for optimizers and reports keyed by ONNX names."""
    for name, target in view.param_names.items():
        value = getattr(view, target)
        if isinstance(value, nn.Parameter):
            yield name, value
