"""Read, decode and redrive dead letters (``dlq.<source>`` topics).

Reading uses a throwaway consumer (``reader_config``: random group, never commits), so listing or
redriving never moves a pipeline group. A redrive produces the original key and the original bytes
unchanged to the letter's original topic, on its original partition when that still exists (keys
stay on the partition they came from, whichever client's partitioner first placed them), and adds
``streamscore.redrive.*`` headers: where the letter was, when it was redriven, the next attempt.
"""

from __future__ import annotations

import io
import json
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
from confluent_kafka import OFFSET_END, Consumer, KafkaError, Producer, TopicPartition

from streamscore.avro import split_header
from streamscore.dlq import PREFIX, parse_headers
from streamscore.errors import DecodeError, StreamscoreError, TransientError
from streamscore.kafka_config import producer_config, reader_config
from streamscore.registry import SchemaRegistry
from streamscore.settings import Settings
from streamscore.topics import dlq_topic

REDRIVE_PREFIX = "streamscore.redrive."
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """ISO 8601 (naive = UTC) or an age such as ``90s``, ``15m``, ``2h``, ``1d`` before now."""
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(text.strip())
    if match:
        return now - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use ISO 8601 or an age like 15m, 2h, 1d)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Letter:
    """One DLQ record: where it is, its bytes, and its parsed ``dlq.*`` context."""

    topic: str
    partition: int
    offset: int
    timestamp: datetime
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    context: dict[str, str]

    def get(self, name: str) -> str | None:
        return self.context.get(name)

    @property
    def stage(self) -> str:
        return self.context.get("stage", "")

    @property
    def source(self) -> str:
        return self.context.get("source", "")

    @property
    def original(self) -> tuple[str | None, int | None, int | None]:
        part = self.context.get("original.partition")
        off = self.context.get("original.offset")
        return (
            self.context.get("original.topic"),
            int(part) if part and part.lstrip("-").isdigit() else None,
            int(off) if off and off.lstrip("-").isdigit() else None,
        )

    @property
    def where(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


@dataclass
class LetterFilter:
    stages: set[str] = field(default_factory=set)
    sources: set[str] = field(default_factory=set)
    record_ids: set[str] = field(default_factory=set)
    offsets: set[int] = field(default_factory=set)
    partition: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    def selects(self, letter: Letter) -> bool:
        if self.stages and letter.stage not in self.stages:
            return False
        if self.sources and letter.source not in self.sources:
            return False
        if self.record_ids and letter.get("record.id") not in self.record_ids:
            return False
        if self.offsets and letter.offset not in self.offsets:
            return False
        if self.partition is not None and letter.partition != self.partition:
            return False
        if self.since and letter.timestamp < self.since:
            return False
        return not (self.until and letter.timestamp > self.until)

    @property
    def narrows(self) -> bool:
        """True when at least one criterion selects a subset."""
        return bool(
            self.stages or self.sources or self.record_ids or self.offsets or self.since or self.until
        )


def dlq_topics(settings: Settings, sources: Sequence[str] = ()) -> list[str]:
    names = list(sources) or [s.name for s in settings.sources]
    return [dlq_topic(n) for n in names]


def _to_letter(msg: Any) -> Letter:
    headers = tuple((k, v or b"") for k, v in (msg.headers() or []))
    _, ts_ms = msg.timestamp()
    return Letter(
        topic=msg.topic(),
        partition=msg.partition(),
        offset=msg.offset(),
        timestamp=datetime.fromtimestamp(ts_ms / 1000.0, UTC),
        key=msg.key(),
        value=msg.value(),
        headers=headers,
        context=parse_headers(headers),
    )


def _start_offsets(
    consumer: Consumer, topic: str, flt: LetterFilter, timeout_s: float, last: int | None = None
) -> list[TopicPartition]:
    meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if meta is None or meta.error is not None:
        raise StreamscoreError(f"DLQ topic {topic} does not exist")
    parts = sorted(meta.partitions)
    if flt.partition is not None:
        parts = [p for p in parts if p == flt.partition]
    if flt.offsets:  # start at the smallest wanted offset
        low = min(flt.offsets)
        return [TopicPartition(topic, p, low) for p in parts]
    if flt.since is not None:
        ms = int(flt.since.timestamp() * 1000)
        found = consumer.offsets_for_times([TopicPartition(topic, p, ms) for p in parts], timeout=timeout_s)
        return [
            TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END) for tp in found
        ]
    starts = []
    for p in parts:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
        starts.append(TopicPartition(topic, p, low if last is None else max(low, high - last)))
    return starts


def read_letters(
    settings: Settings,
    topics: Sequence[str],
    flt: LetterFilter | None = None,
    limit: int | None = None,
    timeout_s: float = 10.0,
    last: int | None = None,
) -> Iterator[Letter]:
    """Letters of ``topics`` matching ``flt``, oldest first per partition, up to the current end;
    with ``last``, only among the newest ``last`` records of each partition."""
    flt = flt or LetterFilter()
    conf = reader_config(settings, "dlq-tool", **{"enable.partition.eof": True})
    consumer = Consumer(conf)
    yielded = 0
    try:
        for topic in topics:
            assignment = _start_offsets(consumer, topic, flt, timeout_s, last)
            ends = {
                tp.partition: consumer.get_watermark_offsets(tp, timeout=timeout_s)[1] for tp in assignment
            }
            pending = {
                tp.partition
                for tp in assignment
                if tp.offset != OFFSET_END and tp.offset < ends[tp.partition]
            }
            if not pending:
                continue
            consumer.assign([tp for tp in assignment if tp.partition in pending])
            deadline = time.monotonic() + timeout_s
            while pending:
                if time.monotonic() > deadline:
                    raise TransientError(
                        f"timed out reading {topic} (partitions {sorted(pending)} unfinished)"
                    )
                for msg in consumer.consume(num_messages=500, timeout=0.5):
                    part = msg.partition()
                    if part not in pending:
                        continue
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            pending.discard(part)
                            continue
                        raise TransientError(f"reading {topic}: {err.str()}")
                    deadline = time.monotonic() + timeout_s
                    offset = msg.offset() or 0
                    if offset >= ends[part] - 1 or (flt.offsets and offset >= max(flt.offsets)):
                        pending.discard(part)
                    if offset >= ends[part]:
                        continue
                    letter = _to_letter(msg)
                    if flt.selects(letter):
                        yield letter
                        yielded += 1
                        if limit is not None and yielded >= limit:
                            return
            consumer.unassign()
    finally:
        consumer.close()


# --- decoding -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decoded:
    kind: str  # avro:<schema id> | json | text | bytes | null | undecodable
    value: Any
    note: str = ""


def decode_value(data: bytes | None, registry: SchemaRegistry | None) -> Decoded:
    """The value as Avro (writer schema from the registry), JSON, text or hex, whichever fits."""
    if data is None:
        return Decoded("null", None)
    note = ""
    if data[:1] == b"\x00" and len(data) >= 5 and registry is not None:
        try:
            schema_id, body = split_header(data)
            text = registry.schema_by_id(schema_id)
            if text is None:
                raise DecodeError(f"schema id {schema_id} unknown to the registry")
            writer = fastavro.parse_schema(json.loads(text))
            return Decoded(f"avro:{schema_id}", fastavro.schemaless_reader(io.BytesIO(body), writer, None))
        except TransientError as exc:
            note = f"registry unavailable: {exc}"
        except Exception as exc:
            note = f"not decodable as Avro: {exc}"
    try:
        text_value = data.decode("utf-8")
    except UnicodeDecodeError:
        return Decoded("bytes", data.hex(), note)
    try:
        return Decoded("json", json.loads(text_value), note)
    except ValueError:
        return Decoded("text", text_value, note)


def decode_key(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "0x" + data.hex()


# --- redrive --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Redriven:
    letter: Letter
    topic: str | None
    partition: int | None = None
    offset: int | None = None
    skipped: str = ""  # reason, when the letter was not redriven


def redrive_headers(letter: Letter, now: datetime | None = None) -> list[tuple[str, bytes]]:
    """The letter's non-``dlq.*`` headers plus ``streamscore.redrive.*`` (from, at, attempt)."""
    now = now or datetime.now(UTC)
    kept = [(k, v) for k, v in letter.headers if not k.startswith((PREFIX, REDRIVE_PREFIX))]
    attempt = letter.get("attempt") or "1"
    nxt = int(attempt) + 1 if attempt.isdigit() else 2
    return [
        *kept,
        (REDRIVE_PREFIX + "from", letter.where.encode()),
        (REDRIVE_PREFIX + "at", now.isoformat(timespec="milliseconds").encode()),
        (REDRIVE_PREFIX + "attempt", str(nxt).encode()),
    ]


def redrive(
    settings: Settings,
    letters: Sequence[Letter],
    to_topic: str | None = None,
    dry_run: bool = False,
    timeout_s: float = 30.0,
) -> list[Redriven]:
    """Produce each letter's original key and bytes to its original (or ``to_topic``) topic."""
    producer = Producer(producer_config(settings, "dlq-redrive"))
    partitions: dict[str, int] = {}
    results: list[Redriven | None] = [None] * len(letters)

    def target_partition(topic: str, wanted: int | None) -> int | None:
        if topic not in partitions:
            meta = producer.list_topics(topic, timeout=timeout_s).topics.get(topic)
            partitions[topic] = 0 if meta is None or meta.error is not None else len(meta.partitions)
        if not partitions[topic]:
            raise StreamscoreError(f"target topic {topic} does not exist")
        return wanted if wanted is not None and 0 <= wanted < partitions[topic] else None

    for i, letter in enumerate(letters):
        orig_topic, orig_partition, _ = letter.original
        topic = to_topic or orig_topic
        if not topic:
            results[i] = Redriven(letter, None, skipped="no dlq.original.topic header; use --to")
            continue
        partition = target_partition(topic, orig_partition if topic == orig_topic else None)
        if dry_run:
            results[i] = Redriven(letter, topic, partition, skipped="dry run")
            continue

        def on_delivery(err: KafkaError | None, msg: Any, i: int = i, letter: Letter = letter) -> None:
            if err is not None:
                results[i] = Redriven(letter, msg.topic(), skipped=f"not delivered: {err.str()}")
            else:
                results[i] = Redriven(letter, msg.topic(), msg.partition(), msg.offset())

        kwargs: dict[str, Any] = {
            "key": letter.key,
            "value": letter.value,
            "headers": redrive_headers(letter),
        }
        if partition is not None:
            kwargs["partition"] = partition
        producer.produce(topic, on_delivery=on_delivery, **kwargs)
        producer.poll(0)
    if producer.flush(timeout_s):
        raise TransientError("redrive: Kafka did not acknowledge every record in time")
    return [r for r in results if r is not None]
