"""``streamscore replay``: export a window of a topic, decoded, to JSON lines, CSV or Parquet.

Window semantics (see ``reader`` and ``inputs``): ``--from`` inclusive, ``--to`` exclusive, by
Kafka record timestamp (or offset); without ``--to`` the replay ends at the high-water marks taken
at start. ``--key`` keeps the records whose key equals it (every partition is scanned: the
partitioner of the writer is not known). Undecodable records are counted and skipped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from streamscore.analyst.inputs import Bound, Format, check_window
from streamscore.analyst.output import check_output, meta, open_writer
from streamscore.analyst.progress import progress_bar
from streamscore.analyst.reader import (
    Decoder,
    PartitionRange,
    in_window,
    open_reader,
    plan,
    read,
    topic_partitions,
)
from streamscore.avro import load_schema
from streamscore.bootstrap import topic_contracts
from streamscore.errors import DecodeError
from streamscore.registry import SchemaRegistry
from streamscore.settings import Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ReplayRequest:
    topic: str
    start: Bound | None
    end: Bound | None = None
    partition: int | None = None
    key: str | None = None
    fmt: Format = Format.jsonl
    out: Path | None = None


@dataclass
class ReplayResult:
    records: int = 0
    undecodable: int = 0
    out_of_window: int = 0
    ranges: list[PartitionRange] = field(default_factory=list)
    seconds: float = 0.0


def contract_of(settings: Settings, topic: str) -> dict | None:  # type: ignore[type-arg]
    """The Avro contract of a pipeline topic; None for any other topic."""
    name = topic_contracts(settings).get(topic)
    return load_schema(name) if name else None


def replay(settings: Settings, req: ReplayRequest, show_progress: bool = True) -> ReplayResult:
    """Run one replay; BadInput (nothing written) for an unknown topic, partition or bad window."""
    check_window(req.start, req.end)
    check_output(req.fmt, req.out)
    started = time.monotonic()
    consumer = open_reader(settings, "replay", **{"enable.partition.eof": True})
    registry = SchemaRegistry(settings.registry)
    result = ReplayResult()
    try:
        parts = topic_partitions(consumer, req.topic, req.partition)
        result.ranges = plan(consumer, req.topic, parts, req.start, req.end)
        decoder = Decoder(registry, req.topic, contract_of(settings, req.topic))
        writer = open_writer(req.fmt, req.out, lambda: decoder.schema)
        key = req.key.encode() if req.key is not None else None
        try:
            with progress_bar(show_progress) as bar:
                task = bar.add_task(req.topic, total=sum(r.size for r in result.ranges) or 1, records=0)
                for msg in read(consumer, req.topic, result.ranges, lambda n: bar.advance(task, n)):
                    if key is not None and msg.key() != key:
                        continue
                    if not in_window(msg, req.start, req.end):
                        result.out_of_window += 1
                        continue
                    try:
                        value = decoder.decode(msg.value())
                    except DecodeError as exc:
                        result.undecodable += 1
                        log.warning(
                            "undecodable_record",
                            partition=msg.partition(),
                            offset=msg.offset(),
                            error=str(exc),
                        )
                        continue
                    writer.write(meta(msg) | value)
                    result.records += 1
                    bar.update(task, records=result.records)
                bar.update(task, completed=bar.tasks[0].total)
        except BaseException:
            writer.abort()
            raise
        writer.close()
    finally:
        consumer.close()
        registry.close()
    result.seconds = time.monotonic() - started
    return result
