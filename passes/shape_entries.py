"""Where one entry of a shape tensor comes from. A Reshape target may be a constant or be
assembled at run time (paddle2onnx: Concat(Slice(Shape(x)), constant); torch: Concat of
Unsqueeze(Gather(Shape(x)))). When pruning changes the channel count, the entry that holds it
must follow: a constant is rewritten, an entry read from the pruned tensor's own shape
follows by itself."""

from __future__ import annotations

import dataclasses

from onnxwootz.passes.graph_index import GraphIndex, attribute

_SAME_VALUES = {"Cast", "Identity"}  # element k of the output is element k of the input


@dataclasses.dataclass(frozen=True)
class ShapeEntry:
    """Element `position` of initializer `tensor` (constant) or of Shape(`tensor`) (not constant)."""

    tensor: str
    position: int
    constant: bool


def shape_entry(index: GraphIndex, shapes: dict[str, list[int]], name: str, position: int) -> ShapeEntry | None:
    """The origin of element `position` of the small 1-D int tensor `name`, through Concat,
    Cast, Identity, (Un)squeeze, Gather and Slice; None when it is computed otherwise. A constant
    is only returned when every tensor on the way is read by one node (rewriting it then
    changes this shape only)."""
    shared = False
    while True:
        array = index.array(name)
        if array is not None:
            return None if shared or not 0 <= position < array.size else ShapeEntry(name, position, True)
        node = index.producer.get(name)
        if node is None:
            return None
        shared = shared or len(index.consumers.get(name, [])) != 1
        op = node.op_type
        if op in _SAME_VALUES or (op in ("Unsqueeze", "Squeeze") and position == 0):
            name = node.input[0]
        elif op == "Shape":
            rank = len(shapes.get(node.input[0], []))
            start = attribute(node, "start", 0)
            start = start + rank if start < 0 else start
            return ShapeEntry(node.input[0], start + position, False)
        elif op == "Gather" and attribute(node, "axis", 0) == 0:
            indices = index.array(node.input[1])
            length = _length(shapes, node.input[0])
            if indices is None or length is None or position >= indices.size:
                return None
            picked = int(indices.reshape(-1)[position])
            name, position = node.input[0], picked + length if picked < 0 else picked
        elif op == "Slice":
            starts, ends, axes, steps = (_constant_input(index, node, i) for i in range(1, 5))
            length = _length(shapes, node.input[0])
            if starts is None or ends is None or starts.size != 1 or length is None:
                return None
            if axes is not None and int(axes.reshape(-1)[0]) not in (0, -1):
                return None
            step = 1 if steps is None else int(steps.reshape(-1)[0])
            picked = range(length)[int(starts[0]):int(ends[0]):step] if step else range(0)
            if position >= len(picked):
                return None
            name, position = node.input[0], picked[position]
        elif op == "Concat":
            for part in node.input:
                length = _length(shapes, part)
                if length is None:
                    return None
                if position < length:
                    name = part
                    break
                position -= length
            else:
                return None
        else:
            return None


_ARITHMETIC = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Floor", "Ceil", "Neg", "Abs"}
_ROUTES = {"Gather", "Slice", "Concat", "Cast", "Identity", "Squeeze", "Unsqueeze", *_ARITHMETIC}
"""Ops that carry a shape tensor's entries (or values computed from them) on to a small output."""
_CHECKED_SLOTS = {("Reshape", 1), ("Resize", 3)}
"""A Reshape target and Resize sizes: their channel rules check the channel entry they read."""
_LENGTH_ONLY = {"Shape", "Size"}
"""Ops that read a shape tensor's length, never its values."""


def channel_count_escapes(index: GraphIndex, shapes: dict[str, list[int]], node) -> bool:
    """Whether the channel count a Shape node reads (entry 1 of its input's shape) may reach
    anything but a Reshape target or Resize sizes: used as a value (a scale, a Range bound), it
    would change what the pruned graph computes. Followed through the ops that route or compute
    shape values; where an entry's origin is lost on the way, the answer is yes."""
    rank = len(shapes.get(node.input[0], []))
    start, end = attribute(node, "start", 0), attribute(node, "end", rank)
    start, end = (v + rank if v < 0 else v for v in (start, end))
    if not start <= 1 < min(end, rank):
        return False
    todo, seen = [node.output[0]], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in index.graph_outputs and _may_hold(index, shapes, name, node.input[0]):
            return True
        for consumer in index.consumers.get(name, []):
            slots = {(consumer.op_type, slot) for slot, x in enumerate(consumer.input) if x == name}
            if slots <= _CHECKED_SLOTS or consumer.op_type in _LENGTH_ONLY:
                continue
            outputs = [output for output in consumer.output if output]
            if consumer.op_type in _ROUTES and all(_length(shapes, output) is not None for output in outputs):
                todo.extend(outputs)
            elif _may_hold(index, shapes, name, node.input[0]):
                return True
    return False


def _may_hold(index: GraphIndex, shapes: dict[str, list[int]], name: str, source: str) -> bool:
    """Whether some entry of the small tensor `name` is, or may be computed from, the channel
    count of `source`."""
    length = _length(shapes, name)
    return length is None or any(_reads_channel_count(index, shapes, name, position, source, 0)
                                 for position in range(length))


def _reads_channel_count(index: GraphIndex, shapes: dict[str, list[int]], name: str, position: int, source: str,
                         depth: int) -> bool:
    """Entry `position` of `name`: routed from Shape(source)[1], or computed (elementwise, with
    broadcasting) from something that is; unknown origins count as yes."""
    entry = shape_entry(index, shapes, name, position)
    if entry is not None:
        return not entry.constant and entry.tensor == source and entry.position == 1
    if index.array(name) is not None:
        return False  # a constant read by more than one node (shape_entry declines those)
    node = index.producer.get(name)
    if node is None or depth > 64:
        return True
    if node.op_type in _SAME_VALUES or node.op_type in ("Squeeze", "Unsqueeze"):
        return _reads_channel_count(index, shapes, node.input[0], position, source, depth + 1)
    if node.op_type == "Concat":  # the part that holds the entry (a computed one: H * W for anchors)
        for part in node.input:
            length = _length(shapes, part)
            if length is None:
                return True
            if position < length:
                return _reads_channel_count(index, shapes, part, position, source, depth + 1)
            position -= length
        return True
    if node.op_type not in _ARITHMETIC:
        return True
    for part in node.input:
        length = _length(shapes, part)
        if length is None:
            return True
        if _reads_channel_count(index, shapes, part, position if length > 1 else 0, source, depth + 1):
            return True
    return False


def resize_sizes_channel(node, rank: int) -> int | None:
    """Which entry of a Resize's `sizes` input (opset 11+) holds the channel count, if any."""
    if node.op_type != "Resize" or len(node.input) < 4 or not node.input[3]:
        return None
    axes = attribute(node, "axes")  # opset 18: sizes lists only these axes
    if axes is None:
        return 1
    axes = [int(a) + rank if int(a) < 0 else int(a) for a in axes]
    return axes.index(1) if 1 in axes else None


def _constant_input(index: GraphIndex, node, slot: int):
    return index.array(node.input[slot]) if len(node.input) > slot and node.input[slot] else None


def _length(shapes: dict[str, list[int]], name: str) -> int | None:
    shape = shapes.get(name)
    if shape is None or len(shape) > 1:
        return None
    return shape[0] if shape else 1
