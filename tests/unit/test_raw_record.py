"""Issue 3: the poller's fast RawRecord encoder writes exactly the bytes of AvroCodec.encode."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producers.raw_record import RawRecordEncoder, varint
from streamscore.avro import AvroCodec, load_schema


class FixedIdRegistry:
    """Stands in for the registry only to hand out a schema id (no HTTP in unit tests)."""

    def schema_id(self, subject: str, schema: Any, register: bool) -> int:
        return 4242

    def schema_by_id(self, schema_id: int) -> str | None:
        import json

        return json.dumps(load_schema("RawRecord")) if schema_id == 4242 else None


def codec() -> AvroCodec:
    return AvroCodec(FixedIdRegistry(), "raw.t-value", load_schema("RawRecord"))  # type: ignore[arg-type]


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)


@settings(max_examples=80, deadline=None)
@given(
    source=text,
    rid=text,
    fetched_at=st.integers(min_value=-(2**45), max_value=2**47),  # datetimes decode (years 1..6000)
    cursor=st.none() | text,
    payload=st.one_of(text, st.just("é" * 9000)),  # lengths past the 8192 table
    trace=text,
)
def test_bytes_equal_the_codec(source, rid, fetched_at, cursor, payload, trace):
    c = codec()
    record = {
        "source": source,
        "record_id": rid,
        "fetched_at": fetched_at,
        "cursor": cursor,
        "payload": payload,
        "trace_id": trace,
    }
    fast = RawRecordEncoder(c).encode(record)
    assert fast == c.encode(record)
    back = c.decode(fast)
    assert back["payload"] == payload and back["cursor"] == cursor


def test_varint_matches_avro_zigzag():
    assert varint(0) == b"\x00" and varint(-1) == b"\x01" and varint(1) == b"\x02"
    assert varint(64) == b"\x80\x01" and varint(-65) == b"\x81\x01"
    rng = random.Random(1)
    c = codec()
    for _ in range(200):
        n = rng.randint(-(2**63), 2**63 - 1)
        rec = {"source": "", "record_id": "", "fetched_at": n, "cursor": None, "payload": "", "trace_id": ""}
        assert RawRecordEncoder(c).encode(rec) == c.encode(rec)


def test_refuses_a_changed_schema():
    schema = load_schema("RawRecord") | {
        "fields": [*load_schema("RawRecord")["fields"], {"name": "x", "type": "int"}]
    }
    with pytest.raises(ValueError, match="schema changed"):
        RawRecordEncoder(AvroCodec(FixedIdRegistry(), "raw.t-value", schema))  # type: ignore[arg-type]
