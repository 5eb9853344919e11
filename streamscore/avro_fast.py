"""A compiled Avro binary encoder for flat record schemas, byte-identical to fastavro's.

Why our own: fastavro's ``schemaless_writer`` costs about 1 µs per field plus 3 µs per call
(measured: 20 µs for a 16-field ``Transaction``), which made Avro encoding the largest single
cost of the processor (py-spy: 20 % of its time with two encodes per record). A record schema
whose fields are all of the kinds below is compiled once into one function per field; encoding
is then a join of their outputs (about half the time; timestamps shared by a batch are cached).
Any other schema gets ``None`` and :class:`streamscore.avro.AvroCodec` keeps using fastavro.
``tests/unit/test_avro_fast.py`` checks byte equality with fastavro on generated records.

Supported field types: ``string``, ``long``, ``int``, ``double``, ``boolean``, ``long`` with
logical type ``timestamp-millis`` (timezone-aware ``datetime`` or int), ``["null", T]`` and
``{"type": "array", "items": T}`` of those. Like the strict codec, a record with a missing or an
extra field, or a value of the wrong type, raises (``KeyError``/``TypeError``/``ValueError``,
turned into ``EncodeError`` by the codec); a naive ``datetime`` is refused.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Encoder = Callable[[Any], bytes]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DOUBLE = struct.Struct("<d").pack


def varint(n: int) -> bytes:
    """Avro ``long``: zigzag, then base-128 varint."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z & ~0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_SMALL = [varint(i) for i in range(4096)]


def _long(value: Any) -> bytes:
    if type(value) is not int:  # bool is an int subclass: refused, as a float is
        raise TypeError(f"{value!r} is not an int")
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{value} does not fit a long")
    return _SMALL[value] if 0 <= value < 4096 else varint(value)


def _string(value: Any) -> bytes:
    if type(value) is not str:
        raise TypeError(f"{value!r} is not a string")
    b = value.encode()
    n = len(b)
    return (_SMALL[n] if n < 4096 else varint(n)) + b


def _double(value: Any) -> bytes:
    if type(value) is bool or not isinstance(value, int | float):
        raise TypeError(f"{value!r} is not a number")
    return _DOUBLE(value)


def _boolean(value: Any) -> bytes:
    if value is True:
        return b"\x01"
    if value is False:
        return b"\x00"
    raise TypeError(f"{value!r} is not a boolean")


_RECENT: dict[Any, bytes] = {}  # datetime -> encoding: a page or batch shares fetched_at, scored_at


def _timestamp_millis(value: Any) -> bytes:
    done = _RECENT.get(value) if type(value) is datetime else None
    if done is not None:
        return done
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{value!r} is a naive datetime")
        delta = value - _EPOCH
        out = _long((delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000)
        if len(_RECENT) >= 256:
            _RECENT.clear()
        _RECENT[value] = out
        return out
    return _long(value)


_PRIMITIVES: dict[str, Encoder] = {"string": _string, "long": _long, "int": _long, "double": _double}
_PRIMITIVES["boolean"] = _boolean


def _nullable(inner: Encoder) -> Encoder:
    def encode(value: Any) -> bytes:
        return b"\x00" if value is None else b"\x02" + inner(value)

    return encode


def _array(item: Encoder) -> Encoder:
    def encode(value: Any) -> bytes:
        if not isinstance(value, list | tuple):
            raise TypeError(f"{value!r} is not an array")
        if not value:
            return b"\x00"
        return _long(len(value)) + b"".join([item(v) for v in value]) + b"\x00"

    return encode


def _field(kind: Any) -> Encoder | None:
    if isinstance(kind, str):
        return _PRIMITIVES.get(kind)
    if isinstance(kind, list):
        if len(kind) == 2 and kind[0] == "null":
            inner = _field(kind[1])
            return None if inner is None else _nullable(inner)
        return None
    if isinstance(kind, dict):
        logical = kind.get("logicalType")
        if logical == "timestamp-millis" and kind.get("type") == "long":
            return _timestamp_millis
        if logical is None and kind.get("type") == "array":
            item = _field(kind.get("items"))
            return None if item is None else _array(item)
        if logical is None:
            return _field(kind.get("type"))
    return None


def compile_encoder(schema: dict[str, Any]) -> Callable[[dict[str, Any]], bytes] | None:
    """An encoder of records of ``schema`` (Avro body, no header), or None if not supported."""
    if schema.get("type") != "record":
        return None
    fields: list[tuple[str, Encoder]] = []
    for f in schema.get("fields", []):
        enc = _field(f["type"])
        if enc is None:
            return None
        fields.append((f["name"], enc))
    names = {name for name, _ in fields}

    def encode(record: dict[str, Any]) -> bytes:
        if record.keys() != names:
            missing, extra = names - record.keys(), record.keys() - names
            raise ValueError(f"record fields differ from the schema: missing {missing}, extra {extra}")
        return b"".join([enc(record[name]) for name, enc in fields])

    return encode
