"""Avro schema → Arrow schema, keeping the types: ``timestamp-millis`` becomes
``timestamp[ms, tz=UTC]``, arrays lists, maps maps, records structs, ``[null, T]`` a nullable T.

A union of several non-null branches has no faithful Arrow type here; it becomes a string holding
the value's JSON text (``Column.convert`` does that).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fastavro
import pyarrow as pa

Convert = Callable[[Any], Any] | None

_PRIMITIVES: dict[str, pa.DataType] = {
    "null": pa.null(),
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "string": pa.string(),
    "bytes": pa.binary(),
}
_LOGICAL: dict[str, pa.DataType] = {
    "timestamp-millis": pa.timestamp("ms", tz="UTC"),
    "timestamp-micros": pa.timestamp("us", tz="UTC"),
    "local-timestamp-millis": pa.timestamp("ms"),
    "local-timestamp-micros": pa.timestamp("us"),
    "date": pa.date32(),
    "time-millis": pa.time32("ms"),
    "time-micros": pa.time64("us"),
    "uuid": pa.string(),
}


@dataclass(frozen=True)
class Column:
    """An Arrow type with the conversion a decoded Avro value needs (None: none)."""

    type: pa.DataType
    convert: Convert = None
    nullable: bool = False


def _json_text(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str, sort_keys=True)


def _each(convert: Convert) -> Convert:
    if convert is None:
        return None
    return lambda items: None if items is None else [convert(v) for v in items]


def column(avro: Any) -> Column:
    """The Arrow column of one (expanded) Avro type."""
    if isinstance(avro, str):
        return Column(_PRIMITIVES.get(avro, pa.string()))
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        if len(branches) == 1:
            inner = column(branches[0])
            return Column(inner.type, inner.convert, nullable=len(branches) < len(avro))
        return Column(pa.string(), _json_text, nullable=True)
    kind, logical = avro["type"], avro.get("logicalType")
    if logical in _LOGICAL:
        return Column(_LOGICAL[logical])
    if logical == "decimal":
        return Column(pa.decimal128(int(avro["precision"]), int(avro.get("scale", 0))))
    if kind == "array":
        item = column(avro["items"])
        return Column(pa.list_(pa.field("item", item.type, nullable=item.nullable)), _each(item.convert))
    if kind == "map":
        value = column(avro["values"])
        conv = value.convert

        def to_pairs(m: dict[str, Any] | None) -> list[tuple[str, Any]] | None:
            if m is None:
                return None
            return [(k, conv(v) if conv else v) for k, v in m.items()]

        return Column(pa.map_(pa.string(), value.type), to_pairs)
    if kind == "record":
        fields = {f["name"]: column(f["type"]) for f in avro["fields"]}
        struct = pa.struct([pa.field(n, c.type, nullable=c.nullable) for n, c in fields.items()])
        converts = {n: c.convert for n, c in fields.items() if c.convert}
        if not converts:
            return Column(struct)
        return Column(struct, lambda r: None if r is None else r | {n: f(r[n]) for n, f in converts.items()})
    if kind == "enum":
        return Column(pa.string())
    if kind == "fixed":
        return Column(pa.binary(int(avro["size"])))
    return column(kind)


def record_columns(schema: dict[str, Any]) -> dict[str, Column]:
    """Top-level columns of an Avro record schema, named types expanded."""
    expanded: dict[str, Any] = fastavro.parse_schema(schema, expand=True)  # type: ignore[assignment]
    return {f["name"]: column(f["type"]) for f in expanded["fields"]}
