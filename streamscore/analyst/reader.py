"""A throwaway topic reader: plan a window per partition, then read it once, in offset order.

Planning (at start, once): high-water marks are taken per partition; a time bound becomes an
offset through ``offsets_for_times`` (the first record whose timestamp is >= the time); an offset
bound is clamped to the retained range. Reading stops per partition at the bound or at the
high-water mark taken at start, whichever comes first, so a replay of a busy topic ends.

Records inside the offset range whose timestamp lies outside ``[from, to)`` (possible with
producer-set timestamps that go backwards) are skipped, so a time window returns exactly the
records whose Kafka timestamp is in it, among those between the two offsets.
"""

from __future__ import annotations

import difflib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from streamscore.analyst.inputs import BadInput, Bound
from streamscore.avro import AvroCodec, split_header, subject_for
from streamscore.errors import DecodeError, TransientError
from streamscore.kafka_config import reader_config
from streamscore.registry import SchemaRegistry
from streamscore.settings import Settings

TIMEOUT_S = 10.0
STALL_S = 30.0


@dataclass
class PartitionRange:
    """Offsets ``[start, stop)`` of one partition to read."""

    partition: int
    start: int
    stop: int
    position: int = field(init=False)

    def __post_init__(self) -> None:
        self.position = self.start

    @property
    def size(self) -> int:
        return max(0, self.stop - self.start)


def open_reader(settings: Settings, role: str, **overrides: Any) -> Consumer:
    """A consumer with a random group id that never commits (never joins a pipeline group)."""
    return Consumer(reader_config(settings, role, **overrides))


def topic_partitions(consumer: Consumer, topic: str, partition: int | None = None) -> list[int]:
    """Partitions of ``topic`` (or just ``partition``); BadInput for an unknown topic or partition."""
    try:
        topics = consumer.list_topics(timeout=TIMEOUT_S).topics
    except Exception as exc:  # KafkaException: broker unreachable
        raise TransientError(f"cannot list topics: {exc}") from exc
    if topic not in topics:
        close = difflib.get_close_matches(topic, [t for t in topics if not t.startswith("__")], n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise BadInput(f"unknown topic {topic!r}{hint}")
    partitions = sorted(topics[topic].partitions)
    if partition is None:
        return partitions
    if partition not in partitions:
        raise BadInput(f"topic {topic!r} has no partition {partition} (it has 0..{len(partitions) - 1})")
    return [partition]


def _times_to_offsets(
    consumer: Consumer, topic: str, parts: list[int], ms: int, high: dict[int, int]
) -> dict[int, int]:
    """First offset with timestamp >= ``ms`` per partition; the high-water mark when there is none."""
    try:
        found = consumer.offsets_for_times([TopicPartition(topic, p, ms) for p in parts], timeout=TIMEOUT_S)
    except Exception as exc:
        raise TransientError(f"offsets_for_times on {topic}: {exc}") from exc
    return {tp.partition: high[tp.partition] if tp.offset < 0 else tp.offset for tp in found}


def plan(
    consumer: Consumer, topic: str, parts: list[int], start: Bound | None, end: Bound | None
) -> list[PartitionRange]:
    """The ``[start, stop)`` offsets per partition for the window, bounded by today's high-water marks."""
    low: dict[int, int] = {}
    high: dict[int, int] = {}
    for p in parts:
        try:
            low[p], high[p] = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=TIMEOUT_S, cached=False
            )
        except Exception as exc:
            raise TransientError(f"watermarks of {topic}[{p}]: {exc}") from exc

    def resolve(bound: Bound | None, default: dict[int, int]) -> dict[int, int]:
        if bound is None:
            return dict(default)
        if bound.kind == "offset":
            return {p: min(max(bound.offset, low[p]), high[p]) for p in parts}
        return _times_to_offsets(consumer, topic, parts, bound.ms, high)

    first, last = resolve(start, low), resolve(end, high)
    return [PartitionRange(p, first[p], max(first[p], min(last[p], high[p]))) for p in parts]


def read(
    consumer: Consumer,
    topic: str,
    ranges: list[PartitionRange],
    on_progress: Callable[[int], None] = lambda _n: None,
    batch: int = 500,
) -> Iterator[Message]:
    """Every message of ``ranges`` (per partition in offset order); ``on_progress`` gets offsets done."""
    active = {r.partition: r for r in ranges if r.size > 0}
    if not active:
        return
    consumer.assign([TopicPartition(topic, p, r.start) for p, r in active.items()])
    last_progress = time.monotonic()

    def finish(r: PartitionRange) -> None:
        on_progress(max(0, r.stop - r.position))
        r.position = r.stop
        consumer.pause([TopicPartition(topic, r.partition)])
        del active[r.partition]

    while active:
        messages = consumer.consume(batch, timeout=1.0)
        if not messages and time.monotonic() - last_progress > STALL_S:
            stuck = ", ".join(f"{topic}[{p}]@{r.position}" for p, r in active.items())
            raise TransientError(f"no progress for {STALL_S:.0f}s reading {stuck}")
        for msg in messages:
            r = active.get(msg.partition() or 0)
            if r is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    finish(r)
                    continue
                if err.retriable() or not err.fatal():
                    continue
                raise TransientError(f"reading {topic}[{r.partition}]: {err.str()}")
            offset = msg.offset() or 0
            if offset >= r.stop:
                finish(r)
                continue
            on_progress(offset + 1 - r.position)
            r.position = offset + 1
            last_progress = time.monotonic()
            yield msg
            if r.position >= r.stop:
                finish(r)


def in_window(msg: Message, start: Bound | None, end: Bound | None) -> bool:
    """Whether the record's timestamp is inside the time bounds (offset bounds always match)."""
    ts = msg.timestamp()[1]
    if start is not None and start.kind == "time" and ts < start.ms:
        return False
    return not (end is not None and end.kind == "time" and ts >= end.ms)


class Decoder:
    """Decodes Confluent-framed Avro values (writer schema by id, via the registry) to one reader
    schema: the topic's contract when it is a pipeline topic, else the first writer schema seen."""

    def __init__(self, registry: SchemaRegistry, topic: str, contract: dict[str, Any] | None) -> None:
        self.registry = registry
        self.topic = topic
        self.codec = AvroCodec(registry, subject_for(topic), contract, register=False) if contract else None

    @property
    def schema(self) -> dict[str, Any] | None:
        """The reader schema, once known."""
        return self.codec.schema if self.codec else None

    def decode(self, data: bytes | None) -> dict[str, Any]:
        if self.codec is None:
            self.codec = self._first_writer(data)
        return self.codec.decode(data)

    def _first_writer(self, data: bytes | None) -> AvroCodec:
        if data is None:
            raise DecodeError("value is null (tombstone)")
        schema_id, _ = split_header(data)
        text = self.registry.schema_by_id(schema_id)
        if text is None:
            raise DecodeError(f"schema id {schema_id} is unknown to the registry")
        return AvroCodec(self.registry, subject_for(self.topic), json.loads(text), register=False)
