"""The compiled encoder writes exactly fastavro's bytes, and refuses what the strict codec refuses."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain import clean
from streamscore.avro import SCHEMAS_DIR, load_schema
from streamscore.avro_fast import compile_encoder
from tests.unit.conftest_processor import good_payload

LONG = st.integers(min_value=-(2**63), max_value=2**63 - 1)
DATETIMES = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
) | st.datetimes(
    min_value=datetime(1900, 1, 2),
    max_value=datetime(2200, 1, 1),
    timezones=st.just(timezone(timedelta(hours=-7))),
)


def values(kind: Any) -> st.SearchStrategy[Any]:
    if kind == "string":
        return st.text()
    if kind in ("long", "int"):
        return LONG if kind == "long" else st.integers(min_value=-(2**31), max_value=2**31 - 1)
    if kind == "double":
        return st.floats(allow_nan=False) | st.integers(min_value=-(2**53), max_value=2**53)
    if kind == "boolean":
        return st.booleans()
    if isinstance(kind, list):
        return st.none() | values(kind[1])
    if kind.get("logicalType") == "timestamp-millis":
        return DATETIMES
    if kind.get("type") == "array":
        return st.lists(values(kind["items"]), max_size=5)
    raise AssertionError(kind)


def records(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({f["name"]: values(f["type"]) for f in schema["fields"]})


def fastavro_bytes(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), record, strict=True)
    return buf.getvalue()


CONTRACTS = sorted(p.stem for p in SCHEMAS_DIR.glob("*.avsc"))


@pytest.mark.parametrize("name", CONTRACTS)
def test_every_contract_compiles(name: str) -> None:
    assert compile_encoder(load_schema(name)) is not None


@pytest.mark.parametrize("name", CONTRACTS)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_bytes_equal_fastavro(name: str, data: st.DataObject) -> None:
    schema = load_schema(name)
    record = data.draw(records(schema))
    encode = compile_encoder(schema)
    assert encode is not None
    assert encode(record) == fastavro_bytes(schema, record)


def test_the_timestamp_cache_gives_each_instant_its_own_bytes() -> None:
    schema = {
        "type": "record",
        "name": "T",
        "fields": [{"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}}],
    }
    encode = compile_encoder(schema)
    assert encode is not None
    base = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    for i in range(600):  # past the cache's size
        t = base + timedelta(milliseconds=i * 37)
        assert encode({"t": t}) == fastavro_bytes(schema, {"t": t})


@pytest.mark.parametrize(
    "change",
    [
        {"amount": "12.5"},  # wrong type
        {"card_present": 1},
        {"imputed_fields": "id"},
        {"event_time": datetime(2026, 1, 1)},  # naive
        {"transaction_id": None},
    ],
)
def test_wrong_values_are_refused(change: dict[str, Any]) -> None:
    schema = load_schema("Transaction")
    when = datetime(2026, 1, 1, tzinfo=UTC)
    record = clean(good_payload(), source="s", record_id="r", fetched_at=when, trace_id="x").to_avro()
    encode = compile_encoder(schema)
    assert encode is not None
    assert encode(record) == fastavro_bytes(schema, record)
    with pytest.raises((TypeError, ValueError)):
        encode(record | change)


def test_missing_or_extra_fields_are_refused() -> None:
    schema = load_schema("RawRecord")
    encode = compile_encoder(schema)
    assert encode is not None
    record = {
        "source": "s",
        "record_id": "r",
        "fetched_at": 0,
        "cursor": None,
        "payload": "{}",
        "trace_id": "t",
    }
    encode(record)
    with pytest.raises(ValueError, match="missing"):
        encode({k: v for k, v in record.items() if k != "payload"})
    with pytest.raises(ValueError, match="extra"):
        encode(record | {"more": 1})


def test_unsupported_schemas_fall_back() -> None:
    enum = {
        "type": "record",
        "name": "E",
        "fields": [{"name": "e", "type": {"type": "enum", "name": "C", "symbols": ["A"]}}],
    }
    union = {"type": "record", "name": "U", "fields": [{"name": "u", "type": ["string", "long"]}]}
    assert compile_encoder(enum) is None and compile_encoder(union) is None
