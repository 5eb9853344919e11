"""``streamscore tail``: a decoded live view of a topic, one JSON line per record on stdout.

New records only by default (every partition assigned at its end), ``from_beginning`` to start at
the earliest retained record. Ends on Ctrl-C (the caller exits 0) or after ``limit`` records.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from streamscore.analyst.output import json_line, meta
from streamscore.analyst.reader import Decoder, open_reader, topic_partitions
from streamscore.analyst.replay import contract_of
from streamscore.errors import DecodeError, TransientError
from streamscore.registry import SchemaRegistry
from streamscore.settings import Settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class TailRequest:
    topic: str
    from_beginning: bool = False
    partition: int | None = None
    key: str | None = None
    limit: int | None = None


def _start(consumer: Consumer, req: TailRequest, partition: int) -> int:
    """The first offset to show: the beginning, or the end as of now (fixed before ``on_ready``)."""
    if req.from_beginning:
        return OFFSET_BEGINNING
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(req.topic, partition), timeout=10)[1])
    except Exception as exc:
        raise TransientError(f"watermarks of {req.topic}[{partition}]: {exc}") from exc


def tail(
    settings: Settings,
    req: TailRequest,
    out: TextIO | None = None,
    on_ready: Callable[[], None] = lambda: None,
) -> int:
    """Print records as they arrive; return how many were printed. ``on_ready`` runs once assigned."""
    stream = out or sys.stdout
    consumer = open_reader(settings, "tail")
    registry = SchemaRegistry(settings.registry)
    printed = 0
    try:
        parts = topic_partitions(consumer, req.topic, req.partition)
        consumer.assign([TopicPartition(req.topic, p, _start(consumer, req, p)) for p in parts])
        decoder = Decoder(registry, req.topic, contract_of(settings, req.topic))
        key = req.key.encode() if req.key is not None else None
        on_ready()
        while req.limit is None or printed < req.limit:
            for msg in consumer.consume(500, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.fatal():
                        raise TransientError(f"tail {req.topic}: {err.str()}")
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer_error", error=err.str())
                    continue
                if key is not None and msg.key() != key:
                    continue
                try:
                    value = decoder.decode(msg.value())
                except DecodeError as exc:
                    log.warning(
                        "undecodable_record", partition=msg.partition(), offset=msg.offset(), error=str(exc)
                    )
                    continue
                stream.write(json_line(meta(msg) | value) + "\n")
                printed += 1
                if req.limit is not None and printed >= req.limit:
                    break
            stream.flush()
    finally:
        consumer.close()
        registry.close()
    return printed
