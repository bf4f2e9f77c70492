"""The protocol-buffer wire format, as far as ONNX files need it: walk the fields of a message
in a buffer without parsing it (so a weight's bytes can be located in the file instead of
copied), and write a message one field range at a time (so a weight can be streamed into it).
protobuf writes known fields in field-number order, so a message cut at a field number and
written head, middle, tail is byte for byte what SerializeToString gives."""

from __future__ import annotations

from typing import Iterator

from google.protobuf.message import Message

LEN = 2
"""The wire type of length-delimited fields (bytes, strings, messages, packed repeats)."""


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(field: int, wire_type: int = LEN) -> bytes:
    return varint(field << 3 | wire_type)


def _read_varint(buffer, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buffer[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def fields(buffer, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, start of the field's tag, start of its value, end of its value) for each
    field of the message in buffer[start:end]; a length-delimited value is its payload."""
    position = start
    while position < end:
        begin = position
        key, position = _read_varint(buffer, position)
        wire_type = key & 7
        if wire_type == 0:
            _, stop = _read_varint(buffer, position)
        elif wire_type == 1:
            stop = position + 8
        elif wire_type == LEN:
            size, position = _read_varint(buffer, position)
            stop = position + size
        elif wire_type == 5:
            stop = position + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type} at byte {begin}")
        if stop > end:
            raise ValueError(f"a protobuf field runs past its message at byte {begin}")
        yield key >> 3, begin, position, stop
        position = stop


def split(message: Message, field: int) -> tuple[bytes, bytes]:
    """The serialized fields of `message` numbered below `field` and those numbered above it."""
    head, tail = type(message)(), type(message)()
    for descriptor, value in message.ListFields():
        if descriptor.number == field:
            continue
        target = head if descriptor.number < field else tail
        if descriptor.is_repeated:
            getattr(target, descriptor.name).extend(value)
        elif descriptor.message_type is not None:
            getattr(target, descriptor.name).CopyFrom(value)
        else:
            setattr(target, descriptor.name, value)
    return head.SerializeToString(), tail.SerializeToString()
