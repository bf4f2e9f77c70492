"""Weights left in their files. A model loaded for pruning keeps each weight as a reference
into the file that holds it (ONNX's external-data form: an absolute location, an offset, a
length, and a stamp of the file), whether the weight was embedded in the .onnx or stored
beside it. The graph in memory is then kilobytes whatever the model's size, copying it copies
no weight, a weight is read only when a pass needs its values, and a written model streams
every weight nobody changed from its file to the new one."""

from __future__ import annotations

import math
import mmap
import os
import stat
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
import onnx
from onnx import external_data_helper, helper, numpy_helper

from onnxwootz.core import wire
from onnxwootz.core.atomic import write_all
from onnxwootz.core.errors import BadModelError
from onnxwootz.core.onnx_helpers import copy_fields, is_weight, skeleton

STAMP = "onnxwootz.stamp"
"""The external-data key that marks a reference: the size and mtime of its file when loaded."""

_GRAPH, _INITIALIZER, _RAW_DATA = 7, 5, 9
"""Field numbers: ModelProto.graph, GraphProto.initializer, TensorProto.raw_data."""

ALIGNMENT = 4096
"""Offsets of tensors in a written data file are multiples of a page, so runtimes can map them."""

SMALLEST_EXTERNAL = 1024
"""Bytes of data from which a tensor goes to the data file (onnx.save_model's threshold)."""


def _stamp(path: Path) -> str:
    status = path.stat()
    return f"{status.st_size}:{status.st_mtime_ns}"


def _current_stamp(path: Path) -> str | None:
    """The stamp of `path` now, None when it is not a regular file (any more)."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return f"{status.st_size}:{status.st_mtime_ns}" if stat.S_ISREG(status.st_mode) else None


def _point(tensor: onnx.TensorProto, location: str, offset: int, length: int, **more: str) -> None:
    """Make `tensor` external data at `location` (and the further external-data keys `more`)."""
    del tensor.external_data[:]
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in {"location": location, "offset": str(offset), "length": str(length), **more}.items():
        tensor.external_data.add(key=key, value=value)


def _refer(tensor: onnx.TensorProto, path: Path, offset: int, length: int) -> None:
    _point(tensor, str(path), offset, length, **{STAMP: _stamp(path)})


def is_reference(tensor: onnx.TensorProto) -> bool:
    return tensor.data_location == onnx.TensorProto.EXTERNAL and any(
        entry.key == STAMP for entry in tensor.external_data)


def location(tensor: onnx.TensorProto) -> Path:
    """The file a reference reads from."""
    return Path(next(entry.value for entry in tensor.external_data if entry.key == "location"))


def _where(tensor: onnx.TensorProto) -> tuple[Path, int, int]:
    """A reference's file, offset and length; an error when the file changed since loading."""
    entries = {entry.key: entry.value for entry in tensor.external_data}
    path = Path(entries["location"])
    if _current_stamp(path) != entries[STAMP]:
        raise BadModelError(f"{path} changed after the model was loaded (the weight '{tensor.name}' is read from it)")
    return path, int(entries["offset"]), int(entries["length"])


def _initializer(buffer: mmap.mmap, begin: int, start: int, stop: int, path: Path) -> bytes:
    """One serialized initializer: a weight embedded as raw_data becomes a reference to where
    its bytes lie in the file; anything else stays as it is."""
    raw = next(((b, s, e) for field, b, s, e in wire.fields(buffer, start, stop) if field == _RAW_DATA), None)
    if raw is None:
        return buffer[begin:stop]
    tensor = onnx.TensorProto.FromString(buffer[start:raw[0]] + buffer[raw[2]:stop])
    if not is_weight(tensor):
        return buffer[begin:stop]
    _refer(tensor, path, raw[1], raw[2] - raw[1])
    payload = tensor.SerializeToString()
    return wire.tag(_INITIALIZER) + wire.varint(len(payload)) + payload


def load(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """The model in `path` with its embedded weights as references into the file (tensors
    stored as external data are left as they are: refer_external). Reads the file's structure,
    not its weights."""
    path = Path(path).resolve()
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
        pieces = []
        for field, begin, start, stop in wire.fields(buffer, 0, len(buffer)):
            if field != _GRAPH:
                pieces.append(buffer[begin:stop])
                continue
            graph = b"".join(_initializer(buffer, b, s, e, path) if f == _INITIALIZER else buffer[b:e]
                             for f, b, s, e in wire.fields(buffer, start, stop))
            pieces += [wire.tag(_GRAPH), wire.varint(len(graph)), graph]
    return onnx.ModelProto.FromString(b"".join(pieces))


def refer_external(model: onnx.ModelProto, folder: Path) -> None:
    """Weights stored as external data (locations already checked to lie in `folder`) become
    references; any other externally stored tensor is read in."""
    for tensor in model.graph.initializer:
        if external_data_helper.uses_external_data(tensor) and not is_reference(tensor) and is_weight(tensor):
            info = external_data_helper.ExternalDataInfo(tensor)
            target = (folder / info.location).resolve()
            offset = int(info.offset or 0)
            length = int(info.length) if info.length is not None else target.stat().st_size - offset
            _refer(tensor, target, offset, length)
    for tensor in external_data_helper._get_all_tensors(model):
        if external_data_helper.uses_external_data(tensor) and not is_reference(tensor):
            external_data_helper.load_external_data_for_tensor(tensor, str(folder))
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]


def read_array(tensor: onnx.TensorProto) -> np.ndarray:
    """The tensor's values, read-only (as numpy_helper.to_array gives them): a reference is
    mapped from its file, so a pass that reads a part of a weight, or reads it block by block,
    brings only that part into memory, and nothing is copied until a pass makes a new array."""
    if not is_reference(tensor):
        return numpy_helper.to_array(tensor)
    path, offset, length = _where(tensor)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    count = math.prod(tensor.dims)
    if count * dtype.itemsize != length:
        raise BadModelError(f"weight '{tensor.name}' has {length} bytes of data for {count} {dtype} values")
    if not count:
        return np.zeros(tuple(tensor.dims), dtype)
    start = offset - offset % mmap.ALLOCATIONGRANULARITY  # a mapping starts on a page
    with open(path, "rb") as handle:  # the mapping outlives the handle, and lives as long as the array
        buffer = mmap.mmap(handle.fileno(), offset + length - start, access=mmap.ACCESS_READ, offset=start)
    return np.frombuffer(buffer, dtype, count, offset - start).reshape(tuple(tensor.dims))


def row_blocks(tensor: onnx.TensorProto, elements: int, out: np.ndarray | None = None
               ) -> Iterator[tuple[slice, np.ndarray]]:
    """The tensor's values a block of rows (its first axis) at a time, at most `elements` values
    a block (at least one row): (the block's rows, their values). A reference is read from its
    file with plain reads, which cost no page faults and bring one block into the cache at a
    time: into `out[rows]` when `out` is given (a writable C-ordered array of the tensor's shape
    and dtype), else into one buffer that each block overwrites (use a block before the next)."""
    shape = tuple(tensor.dims) or (1,)
    row = math.prod(shape[1:])
    step = max(1, elements // max(row, 1))
    target = None if out is None else out.reshape(shape)
    if not is_reference(tensor):
        values = numpy_helper.to_array(tensor).reshape(shape)
        for start in range(0, shape[0], step):
            rows = slice(start, min(start + step, shape[0]))
            if target is not None:
                target[rows] = values[rows]
            yield rows, values[rows] if target is None else target[rows]
        return
    path, offset, length = _where(tensor)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    if math.prod(shape) * dtype.itemsize != length:
        raise BadModelError(f"weight '{tensor.name}' has {length} bytes of data for dims {list(tensor.dims)}")
    buffer = np.empty((min(step, shape[0]), *shape[1:]), dtype) if target is None else None
    with open(path, "rb", buffering=0) as handle:
        handle.seek(offset)
        for start in range(0, shape[0], step):
            rows = slice(start, min(start + step, shape[0]))
            block = target[rows] if target is not None else buffer[:rows.stop - start]
            _read_into(handle, memoryview(block).cast("B"), path, tensor.name)
            yield rows, block


def _read_into(handle: BinaryIO, view: memoryview, path: Path, name: str) -> None:
    """Fill `view` from the file's current position (a read may return less than asked)."""
    while view:
        got = handle.readinto(view)
        if not got:
            raise BadModelError(f"{path} ended inside the weight '{name}'")
        view = view[got:]


def _read_bytes(tensor: onnx.TensorProto) -> bytes:
    path, offset, length = _where(tensor)
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(length)


def _copy(tensor: onnx.TensorProto, out: BinaryIO) -> None:
    """Append a reference's bytes to `out` in the kernel (no copy through this process)."""
    path, offset, length = _where(tensor)
    with open(path, "rb") as source:
        done = 0
        while done < length:
            try:
                moved = os.copy_file_range(source.fileno(), out.fileno(), length - done, offset + done)
            except (AttributeError, OSError):  # no copy_file_range here: through a buffer
                source.seek(offset + done)
                chunk = source.read(min(length - done, 1 << 26))
                write_all(out, chunk)
                moved = len(chunk)
            if not moved:
                raise BadModelError(f"{path} ended inside the weight '{tensor.name}'")
            done += moved


def materialized(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with every reference read in, for tools that read the protos themselves."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for tensor in copy.graph.initializer:
        if is_reference(tensor):
            data = _read_bytes(tensor)
            tensor.ClearField("data_location")
            del tensor.external_data[:]
            tensor.raw_data = data
    return copy


def stored_size(model: onnx.ModelProto) -> int:
    """About the bytes of the model written with every reference read in: its structure and
    each initializer's data by its dims (serializing a large model just to measure it would
    cost as much as writing it)."""
    return skeleton(model, lambda init: False).ByteSize() + sum(_data_bytes(t) for t in model.graph.initializer)


def _data_bytes(tensor: onnx.TensorProto) -> int:
    if is_reference(tensor):
        return _where(tensor)[2]
    if tensor.HasField("raw_data") and (size := _numeric_size(tensor)) is not None:
        return size
    return tensor.ByteSize()


_PLAIN = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
          onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.UINT16,
          onnx.TensorProto.INT32, onnx.TensorProto.UINT32, onnx.TensorProto.INT64, onnx.TensorProto.UINT64,
          onnx.TensorProto.BOOL}
"""Types whose raw data is one fixed-size value after another (not packed bits, not strings)."""


def _numeric_size(tensor: onnx.TensorProto) -> int | None:
    """The raw_data bytes a tensor of a plain type has by its dims (None: another type)."""
    if tensor.data_type not in _PLAIN:
        return None
    itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    return int(np.prod(tensor.dims, dtype=np.int64)) * itemsize


def stored_apart(model: onnx.ModelProto, path: str | os.PathLike[str]) -> bool:
    """Whether some weight of the model loaded from `path` lies in another file (external data)."""
    own = Path(path).resolve()
    return any(is_reference(t) and _where(t)[0] != own for t in model.graph.initializer)


def _parts(tensor: onnx.TensorProto) -> tuple[bytes, bytes, int] | None:
    """A large tensor's serialized fields before raw_data (with raw_data's tag and length) and
    after it, and the size of the whole; None for a tensor written as it is."""
    if is_reference(tensor):
        length = _where(tensor)[2]
    else:
        length = _numeric_size(tensor) if tensor.HasField("raw_data") else None
        if length is None or length < SMALLEST_EXTERNAL:
            return None
    clean = onnx.TensorProto()
    copy_fields(tensor, clean, {"raw_data", "external_data", "data_location"} if is_reference(tensor) else {"raw_data"})
    head, tail = wire.split(clean, _RAW_DATA)
    head += wire.tag(_RAW_DATA) + wire.varint(length)
    return head, tail, len(head) + length + len(tail)


def write_embedded(model: onnx.ModelProto, out: BinaryIO) -> None:
    """Write `model` as one protobuf file with every reference's bytes streamed from its file
    and no large tensor serialized whole: the bytes SerializeToString would give with the
    references read in."""
    model_head, model_tail = wire.split(model, _GRAPH)
    graph_head, graph_tail = wire.split(model.graph, _INITIALIZER)
    parts = [_parts(t) or t.SerializeToString() for t in model.graph.initializer]
    sizes = [len(part) if isinstance(part, bytes) else part[2] for part in parts]
    graph_size = len(graph_head) + len(graph_tail) + sum(len(wire.tag(_INITIALIZER)) + len(wire.varint(size)) + size
                                                         for size in sizes)
    write_all(out, model_head + wire.tag(_GRAPH) + wire.varint(graph_size) + graph_head)
    for tensor, part, size in zip(model.graph.initializer, parts, sizes):
        write_all(out, wire.tag(_INITIALIZER) + wire.varint(size))
        if isinstance(part, bytes):
            write_all(out, part)
            continue
        write_all(out, part[0])
        if is_reference(tensor):
            _copy(tensor, out)
        else:
            raw = tensor.raw_data
            if len(raw) != size - len(part[0]) - len(part[1]):
                raise BadModelError(f"tensor '{tensor.name}' has {len(raw)} bytes of data for dims {list(tensor.dims)}")
            write_all(out, raw)
        write_all(out, part[1])
    write_all(out, graph_tail + model_tail)


def write_external(model: onnx.ModelProto, data: BinaryIO, location: str) -> onnx.ModelProto:
    """Write the data of every reference and every initializer with at least SMALLEST_EXTERNAL
    bytes of raw data into `data` (page-aligned) and return the model that refers to it there."""
    out = skeleton(model, lambda init: False)
    for tensor in model.graph.initializer:
        raw = tensor.raw_data if tensor.HasField("raw_data") else None
        if not is_reference(tensor) and (raw is None or len(raw) < SMALLEST_EXTERNAL):
            out.graph.initializer.append(tensor)
            continue
        offset = -(-data.tell() // ALIGNMENT) * ALIGNMENT
        write_all(data, b"\0" * (offset - data.tell()))
        if raw is None:
            _copy(tensor, data)
        else:
            write_all(data, raw)
        stub = out.graph.initializer.add()
        copy_fields(tensor, stub, {"raw_data", "external_data", "data_location"})
        _point(stub, location, offset, data.tell() - offset)
    return out
