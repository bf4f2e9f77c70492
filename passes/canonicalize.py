"""Canonicalization: bring any exporter's graph to the one form the analysis expects.

Rules, each a small pass:
- NameNodes: every node gets a unique name (reports refer to nodes by name); for a node that
  had no name or a name it shared, its first output in the input is recorded in metadata
  `onnxwootz.node_origins`, so that a plan can name it as the input knows it.
- RemoveInitializerInputs: initializers listed as graph inputs (IR < 4) are weights, not inputs.
- ConstantsToInitializers: Constant nodes holding tensors become initializers (PaddleOCR-style
  graphs keep all weights in Constant nodes).
- FoldChannelCounts: Gather(Shape(x), 1), x's channel count, becomes a constant where onnx
  shape inference fixes it with the inputs' dims left open (the channel count of a conv's
  output is its filter count, whatever the image size): the legacy torch exporter computes
  `torch.chunk`'s slice bounds from it at run time (Shape -> Gather -> Add -> Div -> Mul ->
  Slice), and with it constant, FoldConstants folds the chain into constant bounds that the
  analysis splits and the slicer rewrites. Batch and spatial dims are never folded.
- FoldConstants: nodes whose inputs are all initializers (Unsqueeze of a BN scale, Cast of a
  shape, ...) are evaluated once and replaced by their value.
- EliminateIdentity: Identity and inference-time Dropout are removed; an Identity that exposes
  an initializer under a second name (the legacy torch exporter's weight sharing) becomes a
  private copy under the Identity's output name, so every consumer names its own weight.
- UnshareInitializers: an initializer read by several nodes is copied per consumer as
  `<name>@<node name>` (made unique when a real tensor has that name; recorded in metadata
  `onnxwootz.shared_initializers`), so that slicing it for one consumer never changes another.
BatchNormalization is kept as it is (not folded).

One rewrite needs the tensors' shapes and runs once they are known (`shuffles_to_gathers`,
called by prepare): a channel shuffle, Reshape [N, C, H, W] -> [N, g, C/g, H, W] -> Transpose
(0, 2, 1, 3, 4) -> Reshape back to [N, C, H, W], becomes one Gather of the channels in the
shuffled order, which the analysis follows as a permutation and slicing renumbers (the three
ops could only be rebuilt if every group kept the same positions). So does `strided_identities`:
the dynamo exporter writes AdaptiveAvgPool2d to 1x1 as a mean and an `as_strided` that reads
every element in place, Gather(Reshape(x, [-1]), Range(0, N) * C*H*W + offsets), which hides x's
channels; it becomes x itself."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
from onnx import numpy_helper

from onnxwootz.passes.base import Pass, PassManager, PassResult
from onnxwootz.core.onnx_helpers import without_weights
from onnxwootz.passes.graph_index import GraphIndex, attribute
from onnxwootz.passes.ops import op_kind

SHARED_KEY = "onnxwootz.shared_initializers"
NODE_KEY = "onnxwootz.node_origins"
_FOLD_LIMIT = 16_000_000  # elements: do not materialize huge folded tensors


class NameNodes(Pass):
    def call(self, model: onnx.ModelProto) -> PassResult:
        seen: set[str] = set()
        changed = False
        counts: Counter[str] = Counter()
        given = Counter(node.name for node in model.graph.node)
        origins = node_origins(model)
        for node in model.graph.node:
            original = node.name
            if not node.name or node.name in seen:
                base = node.name or f"{node.op_type}"
                name = base
                while name in seen or (name != original and given[name]):
                    counts[base] += 1
                    name = f"{base}_{counts[base]}"
                node.name = name
                changed = True
            output = next((name for name in node.output if name), None)
            if (node.name != original or given[original] > 1) and output is not None:
                origins[node.name] = output
            seen.add(node.name)
        if origins:
            _set_metadata(model, NODE_KEY, origins)
        return PassResult(model, changed)


class RemoveInitializerInputs(Pass):
    def call(self, model: onnx.ModelProto) -> PassResult:
        inits = {init.name for init in model.graph.initializer}
        real = [value for value in model.graph.input if value.name not in inits]
        if len(real) == len(model.graph.input):
            return PassResult(model, False)
        del model.graph.input[:]
        model.graph.input.extend(real)
        model.ir_version = max(model.ir_version, 4)
        return PassResult(model, True)


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name == "value_float":
            return np.array(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.array(list(attr.floats), dtype=np.float32)
        if attr.name == "value_int":
            return np.array(attr.i, dtype=np.int64)
        if attr.name == "value_ints":
            return np.array(list(attr.ints), dtype=np.int64)
    return None  # sparse or string constants stay nodes


def _replace_nodes_by_initializers(model: onnx.ModelProto, values: dict[int, list[tuple[str, np.ndarray]]]) -> None:
    """Drop the nodes at the given indices and add their outputs as initializers."""
    outputs = {value.name for value in model.graph.output}
    keep = []
    for index, node in enumerate(model.graph.node):
        if index in values and not any(name in outputs for name, _ in values[index]):
            for name, array in values[index]:
                model.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)


class ConstantsToInitializers(Pass):
    def call(self, model: onnx.ModelProto) -> PassResult:
        values = {}
        for index, node in enumerate(model.graph.node):
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                array = _constant_value(node)
                if array is not None:
                    values[index] = [(node.output[0], array)]
        _replace_nodes_by_initializers(model, values)
        return PassResult(model, bool(values))


class FoldChannelCounts(Pass):
    def call(self, model: onnx.ModelProto) -> PassResult:
        index = GraphIndex(model)
        reads = [(node, index.producer[node.input[0]]) for node in model.graph.node
                 if node.op_type == "Gather" and node.input[0] in index.producer and attribute(node, "axis", 0) == 0
                 and index.producer[node.input[0]].op_type == "Shape" and _is_one(index.array(node.input[1]))
                 and attribute(index.producer[node.input[0]], "start", 0) == 0]
        if not reads:
            return PassResult(model, False)
        channels = _static_channel_counts(model, {shape.input[0] for _, shape in reads})
        shape_of = {id(gather): shape for gather, shape in reads}
        values = {}
        for position, node in enumerate(model.graph.node):
            read = shape_of.get(id(node))
            if read is not None and read.input[0] in channels:
                scalar = index.array(node.input[1]).ndim == 0
                values[position] = [(node.output[0], np.array(channels[read.input[0]] if scalar
                                                              else [channels[read.input[0]]], np.int64))]
        _replace_nodes_by_initializers(model, values)
        _drop_orphans(model, [model_node.input[0] for model_node, _ in reads])  # the Shapes nothing reads now
        return PassResult(model, bool(values))


def _is_one(array: np.ndarray | None) -> bool:
    return array is not None and array.size == 1 and int(array.reshape(-1)[0]) == 1


def _static_channel_counts(model: onnx.ModelProto, names: set[str]) -> dict[str, int]:
    """Dim 1 of each tensor in `names` where shape inference on the model as it is (graph
    inputs' dims as declared, dynamic ones symbolic) gives a number."""
    from onnx import shape_inference

    try:
        inferred = shape_inference.infer_shapes(without_weights(model))
    except Exception:
        return {}
    counts = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        if value.name in names and len(dims) > 1 and dims[1].HasField("dim_value") and dims[1].dim_value > 0:
            counts[value.name] = dims[1].dim_value
    return counts


class FoldConstants(Pass):
    def call(self, model: onnx.ModelProto) -> PassResult:
        from onnx.reference import ReferenceEvaluator

        changed = False
        while True:
            index_ = GraphIndex(model)
            values = {}
            for index, node in enumerate(model.graph.node):
                kind = op_kind(node)
                if node.domain not in ("", "ai.onnx") or not node.input or not (kind is None or kind.folds_constants):
                    continue
                if not all(name == "" or index_.is_constant(name) for name in node.input):
                    continue
                inputs = [index_.array(name) if name else None for name in node.input]
                if sum(a.size for a in inputs if a is not None) > _FOLD_LIMIT:
                    continue
                single = onnx.helper.make_model(
                    onnx.helper.make_graph(
                        [node], "fold",
                        [onnx.helper.make_tensor_value_info(n, index_.initializers[n].data_type, None) for n in node.input if n],
                        [onnx.helper.make_empty_tensor_value_info(n) for n in node.output if n],
                    ),
                    opset_imports=list(model.opset_import),
                )
                try:
                    results = ReferenceEvaluator(single).run(None, {n: a for n, a in zip(node.input, inputs) if n})
                except Exception:
                    continue
                if any(np.asarray(r).size > _FOLD_LIMIT for r in results):
                    continue
                values[index] = [(name, np.asarray(r)) for name, r in zip([o for o in node.output if o], results)]
            if not values:
                break
            before = len(model.graph.node)
            _replace_nodes_by_initializers(model, values)
            if len(model.graph.node) == before:
                break
            changed = True
        if changed:
            _drop_unused_initializers(model)
        return PassResult(model, changed)


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {name for node in model.graph.node for name in node.input} | {v.name for v in model.graph.output}
    for init in [init for init in model.graph.initializer if init.name not in used]:
        model.graph.initializer.remove(init)


def _rename_input(model: onnx.ModelProto, old: str, new: str) -> None:
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name == old:
                node.input[index] = new


class EliminateIdentity(Pass):
    def call(self, model: onnx.ModelProto) -> PassResult:
        changed = False
        outputs = {value.name for value in model.graph.output}
        inputs = {value.name for value in model.graph.input}
        inits = {init.name: init for init in model.graph.initializer}
        used = {name for node in model.graph.node for name in node.input} | outputs
        keep = []
        for node in model.graph.node:
            passthrough = node.op_type == "Identity" or (
                node.op_type == "Dropout" and all(name not in used for name in node.output[1:])
            )
            if not passthrough:
                keep.append(node)
                continue
            source, target = node.input[0], node.output[0]
            if target in outputs:
                producer_output = source not in inputs and source not in inits and source not in outputs
                if not producer_output:
                    keep.append(node)
                    continue
                for other in model.graph.node:  # rename the source tensor to the output's name
                    for index, name in enumerate(other.output):
                        if name == source:
                            other.output[index] = target
                _rename_input(model, source, target)
            elif source in inits:
                copy = onnx.TensorProto()
                copy.CopyFrom(inits[source])
                copy.name = target
                model.graph.initializer.append(copy)
                inits[target] = copy
            else:
                _rename_input(model, target, source)
            changed = True
        if changed:
            del model.graph.node[:]
            model.graph.node.extend(keep)
            _drop_unused_initializers(model)
        return PassResult(model, changed)


def _metadata(model: onnx.ModelProto, key: str) -> dict:
    for prop in model.metadata_props:
        if prop.key == key:
            return json.loads(prop.value)
    return {}


def _set_metadata(model: onnx.ModelProto, key: str, value: dict) -> None:
    for prop in list(model.metadata_props):
        if prop.key == key:
            model.metadata_props.remove(prop)
    model.metadata_props.add(key=key, value=json.dumps(value))


def strip_metadata(model: onnx.ModelProto) -> None:
    """Drop what canonicalization recorded about the input model (a pruned model is no
    canonical model of its input)."""
    for prop in list(model.metadata_props):
        if prop.key in (SHARED_KEY, NODE_KEY):
            model.metadata_props.remove(prop)


def shared_origins(model: onnx.ModelProto) -> dict[str, str]:
    """Private copy name -> the initializer name in the input model."""
    return _metadata(model, SHARED_KEY)


def node_origins(model: onnx.ModelProto) -> dict[str, str]:
    """Canonical node name -> the node's first output in the input, for every node whose input
    name was empty or not unique (the others keep their input names)."""
    return _metadata(model, NODE_KEY)


class UnshareInitializers(Pass):
    def call(self, model: onnx.ModelProto) -> PassResult:
        index = GraphIndex(model)
        origins = shared_origins(model)
        outputs = {value.name for value in model.graph.output}
        changed = False
        taken = set(index.initializers) | set(index.producer) | set(index.graph_inputs)
        for name, init in list(index.initializers.items()):
            consumers = index.consumers.get(name, [])
            if len({id(node) for node in consumers}) < 2 or name in outputs:
                continue
            seen = set()
            for node in consumers:
                if id(node) in seen:
                    continue
                seen.add(id(node))
                private = base = f"{name}@{node.name}"
                suffix = 0
                while private in taken:  # a real tensor of that name (paddle2onnx writes `x@0`)
                    suffix += 1
                    private = f"{base}#{suffix}"
                taken.add(private)
                copy = onnx.TensorProto()
                copy.CopyFrom(init)
                copy.name = private
                model.graph.initializer.append(copy)
                for slot, input_name in enumerate(node.input):
                    if input_name == name:
                        node.input[slot] = private
                origins[private] = origins.get(name, name)
            model.graph.initializer.remove(init)
            changed = True
        if changed:
            _set_metadata(model, SHARED_KEY, origins)
        return PassResult(model, changed)


def shuffles_to_gathers(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> bool:
    """Replace every channel shuffle (module docstring) by Gather(x, order, axis=1); the
    shuffle's inner tensors must be read by nothing else. Returns whether one was replaced."""
    index = GraphIndex(model)
    replaced: dict[int, onnx.NodeProto] = {}
    dropped: set[int] = set()
    position = {id(node): number for number, node in enumerate(model.graph.node)}
    for head in model.graph.node:
        shuffle = _shuffle(index, shapes, head)
        if shuffle is None:
            continue
        transpose, tail, groups = shuffle
        channels = shapes[head.input[0]][1]
        order = np.arange(channels).reshape(groups, channels // groups).T.reshape(-1)
        name = f"{tail.name}/shuffle_order"
        model.graph.initializer.append(numpy_helper.from_array(order.astype(np.int64), name))
        gather = onnx.helper.make_node("Gather", [head.input[0], name], [tail.output[0]], name=tail.name, axis=1)
        replaced[position[id(tail)]] = gather
        dropped |= {position[id(head)], position[id(transpose)]}
    if not replaced:
        return False
    nodes = [replaced.get(number, node) for number, node in enumerate(model.graph.node) if number not in dropped]
    orphans = [name for number in [*dropped, *replaced] for name in model.graph.node[number].input[1:]]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    _drop_orphans(model, orphans)
    _drop_unused_initializers(model)
    return True


def strided_identities(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> bool:
    """Replace each Gather that reads every element of x in place (module docstring) by x, the
    index arithmetic left to no reader is dropped. The batch count N in the indices must be
    read from dim 0 of a graph input that has x's batch (the exporter's own symbol for it).
    Returns whether one was replaced."""
    index = GraphIndex(model)
    replaced = []
    for node in model.graph.node:
        x = _strided_identity_source(index, shapes, node)
        if x is not None:
            replaced.append((node, x))
    for node, x in replaced:
        orphans = list(node.input)
        node.op_type = "Identity"
        del node.attribute[:]
        del node.input[:]
        node.input.append(x)
        _drop_orphans(model, orphans)
    if replaced:
        _drop_unused_initializers(model)
    return bool(replaced)


def _strided_identity_source(index: GraphIndex, shapes: dict[str, list[int]], node: onnx.NodeProto) -> str | None:
    """x when `node` is Gather(Reshape(x, [-1]), indices, axis 0) whose indices are x's own flat
    positions in order, else None."""
    if node.op_type != "Gather" or attribute(node, "axis", 0) != 0:
        return None
    flat = index.producer.get(node.input[0])
    if flat is None or flat.op_type != "Reshape" or not _is_minus_one(index.array(flat.input[1])):
        return None
    x = flat.input[0]
    shape = shapes.get(x)
    if not shape or len(shape) < 2 or shapes.get(node.output[0]) != shape:
        return None
    terms = _sum_terms(index, node.input[1])
    dynamic = [term for term in terms if not index.is_constant(term)]
    inner = int(np.prod(shape[1:]))
    if len(dynamic) != 1 or not _batch_positions(index, shapes, dynamic[0], shape, inner):
        return None
    offsets = sum((index.array(term) for term in terms if index.is_constant(term)), np.zeros((), np.int64))
    expected = np.arange(inner).reshape([1, *shape[1:]])
    try:
        return x if np.array_equal(np.broadcast_to(offsets, expected.shape), expected) else None
    except ValueError:
        return None


def _is_minus_one(array: np.ndarray | None) -> bool:
    return array is not None and array.size == 1 and int(array.reshape(-1)[0]) == -1


def _sum_terms(index: GraphIndex, name: str) -> list[str]:
    """The operands of the Add tree that computes `name` (just `name` when no Add does)."""
    producer = index.producer.get(name)
    if producer is None or producer.op_type != "Add":
        return [name]
    return [term for operand in producer.input for term in _sum_terms(index, operand)]


def _batch_positions(index: GraphIndex, shapes: dict[str, list[int]], name: str, shape: list[int],
                     inner: int) -> bool:
    """Whether `name` is Unsqueeze(Range(0, N, 1) * inner) over every axis but the first, N
    read from dim 0 of a graph input whose batch is x's: the first element of each sample."""
    unsqueeze = index.producer.get(name)
    if unsqueeze is None or unsqueeze.op_type != "Unsqueeze" or len(unsqueeze.input) < 2:
        return False
    axes = index.array(unsqueeze.input[1])
    if axes is None or sorted(int(a) % len(shape) for a in axes.reshape(-1)) != list(range(1, len(shape))):
        return False
    mul = index.producer.get(unsqueeze.input[0])
    if mul is None or mul.op_type != "Mul":
        return False
    scales = [index.array(operand) for operand in mul.input if index.is_constant(operand)]
    ranges = [index.producer.get(operand) for operand in mul.input if not index.is_constant(operand)]
    if len(scales) != 1 or scales[0].size != 1 or int(scales[0].reshape(-1)[0]) != inner or len(ranges) != 1:
        return False
    span = ranges[0]
    if span is None or span.op_type != "Range" or not all(
            index.array(bound) is not None and int(index.array(bound).reshape(-1)[0]) == value
            for bound, value in ((span.input[0], 0), (span.input[2], 1))):
        return False
    source = _dim0_source(index, span.input[1])
    return source is not None and source in index.graph_inputs and (shapes.get(source) or [None])[0] == shape[0]


def _dim0_source(index: GraphIndex, name: str) -> str | None:
    """t when `name` is dim 0 of Shape(t) as a scalar: Squeeze(Shape(t, start=0, end=1)) or
    Gather(Shape(t), 0)."""
    node = index.producer.get(name)
    if node is None or node.op_type not in ("Squeeze", "Gather"):
        return None
    shape = index.producer.get(node.input[0])
    if shape is None or shape.op_type != "Shape" or attribute(shape, "start", 0) != 0:
        return None
    if node.op_type == "Squeeze" and attribute(shape, "end") == 1:
        return shape.input[0]
    position = index.array(node.input[1]) if node.op_type == "Gather" and len(node.input) > 1 else None
    if position is not None and position.size == 1 and int(position.reshape(-1)[0]) == 0:
        return shape.input[0]
    return None


def _drop_orphans(model: onnx.ModelProto, names: list[str]) -> None:
    """Remove the nodes that computed `names` (the shuffles' reshape targets) where nothing
    reads their outputs any more, and so on up their inputs."""
    index = GraphIndex(model)
    dead: set[int] = set()
    todo = list(names)
    while todo:
        node = index.producer.get(todo.pop())
        if node is None or id(node) in dead:
            continue
        outputs = [name for name in node.output if name]
        if any(name in index.graph_outputs or any(id(reader) not in dead for reader in index.consumers.get(name, []))
               for name in outputs):
            continue
        dead.add(id(node))
        todo.extend(name for name in node.input if name)
    if dead:
        kept = [node for node in model.graph.node if id(node) not in dead]
        del model.graph.node[:]
        model.graph.node.extend(kept)


def _shuffle(index: GraphIndex, shapes: dict[str, list[int]], head: onnx.NodeProto
             ) -> tuple[onnx.NodeProto, onnx.NodeProto, int] | None:
    """(transpose, tail, groups) when `head` starts a channel shuffle, else None."""
    if head.op_type != "Reshape":
        return None
    x, grouped = shapes.get(head.input[0]), shapes.get(head.output[0])
    if not x or not grouped or len(x) != 4 or len(grouped) != 5 or grouped[0] != x[0] or grouped[3:] != x[2:] \
            or grouped[1] * grouped[2] != x[1] or grouped[1] < 2:
        return None
    readers = index.consumers.get(head.output[0], [])
    if len(readers) != 1 or readers[0].op_type != "Transpose" or attribute(readers[0], "perm") != [0, 2, 1, 3, 4]:
        return None
    transpose = readers[0]
    readers = index.consumers.get(transpose.output[0], [])
    if len(readers) != 1 or readers[0].op_type != "Reshape" or shapes.get(readers[0].output[0]) != x:
        return None
    if any(name in index.graph_outputs for name in (head.output[0], transpose.output[0])):
        return None
    return transpose, readers[0], grouped[1]


def canonicalize(model: onnx.ModelProto, check: bool = True) -> onnx.ModelProto:
    """Run every canonicalization pass in order (in place) and check the result."""
    manager = PassManager(
        [NameNodes(), RemoveInitializerInputs(), ConstantsToInitializers(), FoldChannelCounts(), FoldConstants(),
         EliminateIdentity(), UnshareInitializers()],
        check=check,
    )
    return manager(model).model
