"""Writes one page to Kafka: its records, its dead letters and its cursor, all or nothing.

Transactional (the default): one Kafka transaction per page holds the ``raw.<source>`` records,
the ``dlq.<source>`` letters and the ``_streamscore.cursors`` record, so a reader with
``isolation.level=read_committed`` sees the cursor exactly when it sees the page. The
transactional id is fixed per source, so a restarted poller fences its killed predecessor and
aborts whatever it left open. Non-transactional (``transactional = false``, for brokers without
transactions): the page is produced and acknowledged first, then the cursor.
Failures raise :class:`TransientError`; the caller recreates the publisher and resumes from the
last committed cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException

from producers.cursor_store import StoredCursor, encode_cursor
from streamscore.dlq import DeadLetter
from streamscore.errors import StreamscoreError, TransientError
from streamscore.kafka_config import producer_config
from streamscore.producer import AsyncProducer
from streamscore.settings import Settings, SourceSettings
from streamscore.topics import CURSORS_TOPIC, dlq_topic, raw_topic


@dataclass
class PageBatch:
    """What one fetched page turns into."""

    cursor: StoredCursor
    records: list[tuple[bytes, bytes]] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)

    def merge(self, later: PageBatch) -> PageBatch:
        """This page and the next one as one batch, carrying the later cursor."""
        return PageBatch(later.cursor, self.records + later.records, self.letters + later.letters)


def transactional_id(settings: Settings, source: SourceSettings) -> str:
    return f"{settings.kafka.client_id_prefix}-poller-{source.name}"


class PagePublisher:
    def __init__(self, settings: Settings, source: SourceSettings) -> None:
        self.source = source
        self.raw_topic = raw_topic(source.name)
        self.dlq_topic = dlq_topic(source.name)
        self.transactional = source.transactional
        self.timeout_s = source.transaction_timeout_s
        overrides: dict[str, int] = {}
        if self.transactional:  # librdkafka wants delivery.timeout.ms <= transaction.timeout.ms
            ms = int(self.timeout_s * 1000)
            overrides = {"transaction.timeout.ms": ms, "delivery.timeout.ms": ms}
        conf = producer_config(
            settings,
            f"poller-{source.name}",
            transactional_id=transactional_id(settings, source) if self.transactional else None,
            **overrides,
        )
        self.producer = AsyncProducer(conf)
        self.ready = False

    async def start(self) -> None:
        if self.transactional:
            try:
                await asyncio.to_thread(self.producer.raw.init_transactions, self.timeout_s)
            except KafkaException as exc:
                raise TransientError(f"init_transactions for {self.source.name}: {exc}") from exc
        self.ready = True

    async def publish(self, page: PageBatch) -> None:
        """Make the page durable; return only when Kafka acknowledged all of it."""
        p = self.producer
        try:
            key, value = encode_cursor(page.cursor)
            if self.transactional:
                # commit_transaction succeeds only when every message of the transaction was
                # acknowledged, so no per-message delivery callback is needed (they cost ~20% CPU)
                p.raw.begin_transaction()
                for k, v in page.records:
                    self._produce(self.raw_topic, v, k)
                for letter in page.letters:
                    self._produce(self.dlq_topic, letter.value, letter.key, letter.headers())
                self._produce(CURSORS_TOPIC, value, key)
                await asyncio.to_thread(p.raw.commit_transaction, self.timeout_s)
            else:
                acks = p.batch()
                for k, v in page.records:
                    p.produce(acks, self.raw_topic, v, k)
                for letter in page.letters:
                    p.produce(acks, self.dlq_topic, letter.value, letter.key, headers=letter.headers())
                await acks.wait()
                cursor_ack = p.batch()
                p.produce(cursor_ack, CURSORS_TOPIC, value, key)
                await cursor_ack.wait()
        except KafkaException as exc:
            self.ready = False
            raise TransientError(f"publishing a page of {self.source.name}: {exc}") from exc
        except StreamscoreError as exc:  # DeliveryFailed, or produce refused (e.g. fenced)
            self.ready = False
            raise TransientError(f"publishing a page of {self.source.name}: {exc}") from exc
        for letter in page.letters:
            letter.record()

    def _produce(self, topic: str, value: bytes | None, key: bytes | None, headers: Any = None) -> None:
        """Queue one message of the open transaction; wait briefly when librdkafka's queue is full."""
        raw = self.producer.raw
        while True:
            try:
                if headers:
                    raw.produce(topic, value, key, headers=headers)
                else:
                    raw.produce(topic, value, key)
                return
            except BufferError:
                raw.poll(0.05)

    async def close(self, timeout_s: float = 10.0) -> None:
        if self.transactional and self.ready:
            # nothing open, or the producer is fenced: both fine on close
            with contextlib.suppress(KafkaException):
                await asyncio.to_thread(self.producer.raw.abort_transaction, 5.0)
        await asyncio.to_thread(self.producer.close, timeout_s)
