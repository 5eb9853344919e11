"""Issue 7 (no services): window bounds, Avro → Arrow types, the rescore comparison."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pytest

from streams.rescore_compare import Scored, compare
from streamscore.analyst.arrow import record_columns
from streamscore.analyst.inputs import BadInput, Bound, check_window, parse_bound

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", Bound("offset", offset=42)),
        ("2025-06-01T10:00", Bound("time", time=NOW - timedelta(hours=2))),
        ("2025-06-01T12:00:00+02:00", Bound("time", time=NOW - timedelta(hours=2))),
        ("2025-06-01T11:30:00Z", Bound("time", time=NOW - timedelta(minutes=30))),
        ("-90s", Bound("time", time=NOW - timedelta(seconds=90))),
        ("2d ago", Bound("time", time=NOW - timedelta(days=2))),
        ("now", Bound("time", time=NOW)),
    ],
)
def test_bounds_parse(text, expected):
    assert parse_bound(text, NOW, "--from") == expected


@pytest.mark.parametrize(("text", "message"), [("2025-06-01T12:00:01Z", "future"), ("-1x", "neither")])
def test_bad_bounds_are_refused(text, message):
    with pytest.raises(BadInput, match=message):
        parse_bound(text, NOW, "--from")


def test_window_must_be_ordered():
    check_window(parse_bound("-2h", NOW, "--from"), parse_bound("-1h", NOW, "--to"))
    with pytest.raises(BadInput, match="before"):
        check_window(parse_bound("-1h", NOW, "--from"), parse_bound("-1h", NOW, "--to"))
    with pytest.raises(BadInput, match="before"):
        check_window(Bound("offset", offset=5), Bound("offset", offset=2))


def test_avro_types_map_to_arrow_types():
    schema = {
        "type": "record",
        "name": "R",
        "fields": [
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "day", "type": {"type": "int", "logicalType": "date"}},
            {
                "name": "amount",
                "type": {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2},
            },
            {"name": "tags", "type": {"type": "map", "values": "long"}},
            {"name": "kind", "type": {"type": "enum", "name": "K", "symbols": ["a", "b"]}},
            {"name": "either", "type": ["null", "string", "long"]},
            {
                "name": "inner",
                "type": {"type": "record", "name": "I", "fields": [{"name": "x", "type": "float"}]},
            },
            {"name": "again", "type": ["null", "I"]},
        ],
    }
    cols = record_columns(schema)
    assert cols["at"].type == pa.timestamp("us", tz="UTC")
    assert cols["day"].type == pa.date32()
    assert cols["amount"].type == pa.decimal128(9, 2)
    assert cols["tags"].type == pa.map_(pa.string(), pa.int64())
    assert cols["kind"].type == pa.string()
    assert cols["either"].type == pa.string() and cols["either"].convert is not None
    assert cols["either"].convert(7) == "7"
    assert cols["inner"].type == pa.struct([pa.field("x", pa.float32(), nullable=False)])
    assert cols["again"].type == cols["inner"].type and cols["again"].nullable
    row = {"amount": Decimal("1.25"), "tags": {"a": 1}}
    table = pa.Table.from_pylist(
        [{"amount": row["amount"], "tags": cols["tags"].convert(row["tags"])}],
        schema=pa.schema([("amount", cols["amount"].type), ("tags", cols["tags"].type)]),
    )
    assert table.to_pylist() == [{"amount": Decimal("1.25"), "tags": [("a", 1)]}]


def test_comparison_numbers():
    def s(score: float, anomaly: bool = False) -> Scored:
        return Scored(score, "fraud" if score >= 0.5 else "legit", anomaly, False)

    new = {"a": s(0.9, True), "b": s(0.2), "c": s(0.6), "d": s(0.1)}
    base = {"a": s(0.7), "b": s(0.6, True), "c": s(0.7), "zz": s(0.9)}
    c = compare("m:v2", new, "m:v1", base)
    assert c.compared == 3
    assert c.agreement == pytest.approx(2 / 3)
    assert c.mean_shift == pytest.approx((0.2 - 0.4 - 0.1) / 3)
    assert c.mean_abs_shift == pytest.approx(0.7 / 3)
    assert (c.new.records, c.new.anomalies, c.new.fraud) == (4, 1, 2)
    assert (c.baseline.records, c.baseline.anomalies, c.baseline.fraud) == (3, 1, 3)
