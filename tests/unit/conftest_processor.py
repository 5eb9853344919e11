"""Helpers of the processor's unit tests: an in-memory schema registry and record builders.

Unit tests only; integration tests use the real registry.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from streamscore.avro import AvroCodec, load_schema
from streamscore.registry import canonical

FETCHED = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


class MemoryRegistry:
    """Subject/id bookkeeping of a registry, in memory (same two methods AvroCodec calls)."""

    def __init__(self) -> None:
        self.by_id: dict[int, str] = {}
        self.ids: dict[tuple[str, str], int] = {}

    def schema_id(self, subject: str, schema: dict[str, Any] | str, register: bool) -> int:
        text = canonical(schema)
        key = (subject, text)
        if key not in self.ids:
            self.ids[key] = len(self.by_id) + 1
            self.by_id[self.ids[key]] = text
        return self.ids[key]

    def schema_by_id(self, schema_id: int) -> str | None:
        return self.by_id.get(schema_id)


def codecs(registry: MemoryRegistry | None = None, source: str = "demo") -> dict[str, AvroCodec]:
    reg: Any = registry or MemoryRegistry()
    return {
        "raw": AvroCodec(reg, f"raw.{source}-value", load_schema("RawRecord")),
        "clean": AvroCodec(reg, f"clean.{source}-value", load_schema("Transaction")),
        "prediction": AvroCodec(reg, f"predictions.{source}-value", load_schema("Prediction")),
    }


def good_payload(i: int = 1, **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": f"txn_{i:012d}",
        "customer_id": "cus_00042",
        "customer_country": "DE",
        "merchant_id": "mer_00007",
        "merchant_category": "grocery",
        "amount": 42.5,
        "currency": "EUR",
        "country": "DE",
        "channel": "pos",
        "card_present": True,
        "timestamp": "2025-03-01T10:15:00Z",
    }
    record.update(changes)
    return {k: v for k, v in record.items() if v is not ...}


def raw_value(
    raw_codec: AvroCodec, payload: dict[str, Any] | str, record_id: str = "txn_1", source: str = "demo"
) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return raw_codec.encode(
        {
            "source": source,
            "record_id": record_id,
            "fetched_at": FETCHED,
            "cursor": None,
            "payload": text,
            "trace_id": f"trace-{record_id}",
        }
    )
