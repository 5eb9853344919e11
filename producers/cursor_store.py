"""Poller cursors in the compacted topic ``_streamscore.cursors`` (key = source name).

The value is a small JSON document (the topic carries no Avro contract; operators read it with
any tool): ``{"source", "pagination", "position", "records", "updated_at"}``. It is written in
the same Kafka transaction as the page it follows, so a committed cursor never runs ahead of
its records. On start the poller reads the topic with ``read_committed`` up to the end offset it
saw when it started, and takes the last value of each key; a null value (tombstone) resets a
source to the beginning.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from streamscore.errors import ConfigError, TransientError
from streamscore.kafka_config import reader_config
from streamscore.settings import Settings, SourceSettings
from streamscore.topics import CURSORS_TOPIC


@dataclass(frozen=True)
class StoredCursor:
    source: str
    pagination: str
    position: str | None
    records: int = 0
    updated_at: str = ""


def encode_cursor(cursor: StoredCursor) -> tuple[bytes, bytes]:
    """(key, value) of the cursor message."""
    value = {
        "source": cursor.source,
        "pagination": cursor.pagination,
        "position": cursor.position,
        "records": cursor.records,
        "updated_at": cursor.updated_at or datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    return cursor.source.encode(), orjson.dumps(value)


def decode_cursor(value: bytes) -> StoredCursor:
    data = orjson.loads(value)
    return StoredCursor(
        source=str(data["source"]),
        pagination=str(data["pagination"]),
        position=None if data.get("position") is None else str(data["position"]),
        records=int(data.get("records") or 0),
        updated_at=str(data.get("updated_at") or ""),
    )


def load_cursors(settings: Settings, timeout_s: float = 30.0) -> dict[str, StoredCursor]:
    """Every source's last committed cursor (blocking; run it in a thread)."""
    conf = reader_config(settings, "cursor-store", **{"enable.partition.eof": True})
    consumer = Consumer(conf)
    found: dict[str, StoredCursor] = {}
    try:
        tp = TopicPartition(CURSORS_TOPIC, 0)
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
        except Exception as exc:
            raise TransientError(f"cannot read {CURSORS_TOPIC}: {exc}") from exc
        if high <= low:
            return found
        consumer.assign([TopicPartition(CURSORS_TOPIC, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout_s
        # Stop at the end offset seen at start. (Partition EOF alone is not enough: while other
        # pollers keep committing transactions, a read_committed reader may never see one.)
        while time.monotonic() < deadline:
            if consumer.position([tp])[0].offset >= high:
                return found
            for msg in consumer.consume(10_000, timeout=0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        return found
                    raise TransientError(f"reading {CURSORS_TOPIC}: {err.str()}")
                key = (msg.key() or b"").decode()
                value = msg.value()
                if value is None:
                    found.pop(key, None)
                else:
                    try:
                        found[key] = decode_cursor(value)
                    except (ValueError, KeyError, TypeError):
                        continue  # not a poller cursor; ignore foreign writes
        raise TransientError(f"reading {CURSORS_TOPIC}: no end of partition within {timeout_s}s")
    finally:
        consumer.close()


def start_position(source: SourceSettings, stored: StoredCursor | None) -> StoredCursor:
    """The cursor to resume from; a cursor of another pagination kind is a configuration error."""
    if stored is None:
        return StoredCursor(source.name, source.pagination, None)
    if stored.pagination != source.pagination:
        raise ConfigError(
            "STREAMSCORE_SOURCES",
            f"source {source.name!r}: stored cursor is for pagination {stored.pagination!r}, "
            f"configured is {source.pagination!r}; delete the cursor (tombstone key "
            f"{source.name!r} in {CURSORS_TOPIC}) to start over",
        )
    return stored
