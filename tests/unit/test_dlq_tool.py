"""DLQ tool without a broker: time parsing, filters, decoding, redrive headers; and the log line of
a dead letter (structlog ``capture_logs``) carrying its record id, stage and error."""

from __future__ import annotations

import io
import json
import logging
import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import fastavro
import pytest
import structlog
from structlog.testing import capture_logs

from streamscore import dlq
from streamscore.avro import load_schema
from streamscore.dlq import DeadLetter, parse_headers
from streamscore.dlq_tool import Letter, LetterFilter, decode_value, parse_time, redrive_headers
from streamscore.errors import ValidationError
from streamscore.log import configure_logging

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def letter(offset: int = 0, stage: str = "validate", at: datetime = NOW, **extra: str) -> Letter:
    dead = DeadLetter("s", stage, "boom", b"k", b"v", "raw.s", 1, 40, f"r{offset}", extra=extra)
    headers = (("trace", b"t-1"), *dead.headers())
    return Letter("dlq.s", 0, offset, at, b"k", b"v", headers, parse_headers(headers))


def test_parse_time_accepts_iso_and_ages() -> None:
    assert parse_time("15m", NOW) == NOW - timedelta(minutes=15)
    assert parse_time("1.5h", NOW) == NOW - timedelta(minutes=90)
    assert parse_time("2026-05-01T10:00:00Z") == datetime(2026, 5, 1, 10, tzinfo=UTC)
    assert parse_time("2026-05-01T10:00:00") == datetime(2026, 5, 1, 10, tzinfo=UTC)  # naive = UTC
    with pytest.raises(ValueError, match="not a time"):
        parse_time("yesterday")


def test_filter_combines_stage_time_offsets_and_ids() -> None:
    a, b = letter(0, "validate", NOW - timedelta(hours=2)), letter(1, "decode", NOW)
    assert LetterFilter().selects(a) and not LetterFilter().narrows
    assert [x.offset for x in (a, b) if LetterFilter(stages={"decode"}).selects(x)] == [1]
    assert [x.offset for x in (a, b) if LetterFilter(since=NOW - timedelta(hours=1)).selects(x)] == [1]
    assert [x.offset for x in (a, b) if LetterFilter(until=NOW - timedelta(hours=1)).selects(x)] == [0]
    assert [x.offset for x in (a, b) if LetterFilter(offsets={0}).selects(x)] == [0]
    assert [x.offset for x in (a, b) if LetterFilter(record_ids={"r1"}).selects(x)] == [1]
    assert not LetterFilter(stages={"decode"}, offsets={0}).selects(a)


def test_letter_knows_its_original_position() -> None:
    x = letter(3)
    assert x.original == ("raw.s", 1, 40) and x.where == "dlq.s:0:3" and x.stage == "validate"


def test_redrive_headers_keep_context_drop_dlq_and_count_attempts() -> None:
    headers = dict(redrive_headers(letter(3, attempt="ignored"), NOW))
    assert headers["trace"] == b"t-1"
    assert not any(k.startswith("dlq.") for k in headers)
    assert headers["streamscore.redrive.from"] == b"dlq.s:0:3"
    assert headers["streamscore.redrive.at"] == b"2026-05-01T12:00:00.000+00:00"
    assert headers["streamscore.redrive.attempt"] == b"2"
    # a letter that was itself redriven once and failed again (attempt 2)
    headers2 = (("streamscore.redrive.from", b"x"), ("dlq.attempt", b"2"))
    second = Letter("dlq.s", 0, 4, NOW, b"k", b"v", headers2, {"attempt": "2"})
    assert dict(redrive_headers(second, NOW))["streamscore.redrive.attempt"] == b"3"
    assert [k for k, _ in redrive_headers(second, NOW)].count("streamscore.redrive.from") == 1


class SchemaById:
    """A registry answering one schema id (decode_value only calls ``schema_by_id``)."""

    def __init__(self, schema_id: int, schema: dict[str, object]) -> None:
        self.schema_id, self.text = schema_id, json.dumps(schema)

    def schema_by_id(self, schema_id: int) -> str | None:
        return self.text if schema_id == self.schema_id else None


def test_decode_value_tries_avro_json_text_then_hex() -> None:
    schema = load_schema("RawRecord")
    record = {
        "source": "s",
        "record_id": "r1",
        "fetched_at": NOW,
        "cursor": None,
        "payload": "{}",
        "trace_id": "t",
    }
    buf = io.BytesIO()
    buf.write(struct.pack(">bI", 0, 42))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), record)
    registry = SchemaById(42, schema)
    decoded = decode_value(buf.getvalue(), registry)  # type: ignore[arg-type]
    assert decoded.kind == "avro:42" and decoded.value["record_id"] == "r1"
    unknown = decode_value(b"\x00\x00\x00\x00\x07abc", registry)  # type: ignore[arg-type]
    assert unknown.kind == "text" and "unknown to the registry" in unknown.note
    assert decode_value(b'{"a": [1]}', None).value == {"a": [1]}
    assert decode_value(b"plain", None).kind == "text"
    assert decode_value(b"\xff\xfe", None) == decode_value(b"\xff\xfe", None)
    assert decode_value(b"\xff\xfe", None).value == "fffe"
    assert decode_value(None, None).kind == "null"


@pytest.fixture
def fresh_structlog(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """configure_logging caches loggers on first use, which hides them from capture_logs; give the
    DLQ module an uncached logger for the test and restore structlog and stdlib logging after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    structlog.reset_defaults()
    monkeypatch.setattr(dlq, "log", structlog.get_logger("streamscore.dlq"))
    yield
    structlog.reset_defaults()
    root.handlers, root.level = handlers, level


@pytest.mark.usefixtures("fresh_structlog")
def test_dead_letter_log_carries_record_id_stage_and_error() -> None:
    letter = DeadLetter(
        source="transactions",
        stage="validate",
        error=ValidationError("amount: must be > 0"),
        key=b"tx-42",
        value=b"{}",
        topic="raw.transactions",
        partition=2,
        offset=17,
        record_id="tx-42",
    )
    with capture_logs() as logs:
        letter.record()
    [entry] = [e for e in logs if e["event"] == "dead_letter"]
    assert entry["record_id"] == "tx-42"
    assert entry["stage"] == "validate"
    assert entry["error"] == "amount: must be > 0" and entry["error_class"] == "ValidationError"
    assert (entry["topic"], entry["partition"], entry["offset"]) == ("raw.transactions", 2, 17)
    assert entry["log_level"] == "warning"


@pytest.mark.usefixtures("fresh_structlog")
def test_json_log_line_has_bound_context_and_no_secrets(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_logging("json", "INFO")
    monkeypatch.setattr(dlq, "log", structlog.get_logger("streamscore.dlq"))
    with structlog.contextvars.bound_contextvars(trace_id="trace-9", topic="raw.transactions"):
        DeadLetter("transactions", "decode", "bad magic", b"k", b"v", record_id="r-9").record()
        structlog.get_logger().info("connecting", password="hunter2")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    entry = next(x for x in lines if x["event"] == "dead_letter")
    assert entry["trace_id"] == "trace-9" and entry["record_id"] == "r-9" and entry["stage"] == "decode"
    assert entry["error"] == "bad magic" and entry["level"] == "warning" and "timestamp" in entry
    secret = next(x for x in lines if x["event"] == "connecting")
    assert secret["password"] == "***"
