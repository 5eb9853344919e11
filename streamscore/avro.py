"""Avro values in the Confluent wire format: magic byte 0, 4-byte big-endian schema id, Avro binary.

Encoding is strict: a record with a missing or an extra field raises ``EncodeError`` instead of
being silently completed or trimmed. Flat record schemas (all of ours) are encoded by
:mod:`streamscore.avro_fast` (same bytes as fastavro, about half the time), others by
fastavro. Decoding resolves the writer schema (by id, through the registry and its disk cache)
against the reader schema of this code.
"""

from __future__ import annotations

import io
import json
import struct
from functools import cache
from typing import Any

import fastavro
from fastavro.types import Schema

from streamscore.avro_fast import compile_encoder
from streamscore.errors import DecodeError, EncodeError, RegistryUnavailable
from streamscore.registry import SchemaRegistry
from streamscore.settings import REPO_ROOT

SCHEMAS_DIR = REPO_ROOT / "schemas" / "avro"
MAGIC = 0
_HEADER = struct.Struct(">bI")


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The contract ``schemas/avro/<name>.avsc`` as a JSON object."""
    return dict(json.loads((SCHEMAS_DIR / f"{name}.avsc").read_text()))


def subject_for(topic: str) -> str:
    return f"{topic}-value"


def split_header(data: bytes) -> tuple[int, memoryview]:
    """(schema id, Avro body) of a framed value, or DecodeError."""
    if len(data) < _HEADER.size:
        raise DecodeError(f"value of {len(data)} bytes is shorter than the Confluent header")
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise DecodeError(f"magic byte {magic} is not the Confluent wire format (0)")
    return schema_id, memoryview(data)[_HEADER.size :]


class AvroCodec:
    """Encode/decode one contract on one subject."""

    def __init__(
        self, registry: SchemaRegistry, subject: str, schema: dict[str, Any], register: bool = True
    ) -> None:
        self.registry = registry
        self.subject = subject
        self.schema = schema
        self.parsed: Schema = fastavro.parse_schema(schema)
        self._fast = compile_encoder(schema)  # None: not a flat record, fastavro writes it
        self._register = register
        self._id: int | None = None
        self._header = b""
        self._writers: dict[int, Schema] = {}

    @classmethod
    def for_topic(
        cls, registry: SchemaRegistry, topic: str, contract: str, register: bool = True
    ) -> AvroCodec:
        return cls(registry, subject_for(topic), load_schema(contract), register)

    @property
    def schema_id(self) -> int:
        if self._id is None:
            self._id = self.registry.schema_id(self.subject, self.schema, self._register)
            self._header = _HEADER.pack(MAGIC, self._id)
            self._writers[self._id] = self.parsed
        return self._id

    def encode(self, record: dict[str, Any]) -> bytes:
        _ = self.schema_id
        try:
            if self._fast is not None:
                return self._header + self._fast(record)
            buf = io.BytesIO()
            buf.write(self._header)
            fastavro.schemaless_writer(buf, self.parsed, record, strict=True)
            return buf.getvalue()
        except (ValueError, TypeError, AttributeError, OverflowError, KeyError) as exc:
            raise EncodeError(f"{self.subject}: {exc}") from exc

    def _writer_schema(self, schema_id: int) -> Schema:
        writer = self._writers.get(schema_id)
        if writer is None:
            text = self.registry.schema_by_id(schema_id)
            if text is None:
                raise DecodeError(f"schema id {schema_id} is unknown to the registry")
            try:
                writer = fastavro.parse_schema(json.loads(text))
            except Exception as exc:
                raise DecodeError(f"schema id {schema_id} does not parse: {exc}") from exc
            self._writers[schema_id] = writer
        return writer

    def decode(self, data: bytes | None) -> dict[str, Any]:
        if data is None:
            raise DecodeError("value is null (tombstone)")
        schema_id, body = split_header(data)
        writer = self._writer_schema(schema_id)
        try:
            value = fastavro.schemaless_reader(io.BytesIO(body), writer, self.parsed)
        except RegistryUnavailable:
            raise
        except Exception as exc:
            raise DecodeError(f"Avro body does not decode with schema id {schema_id}: {exc!r}") from exc
        if not isinstance(value, dict):
            raise DecodeError(f"decoded value is {type(value).__name__}, not a record")
        return value
