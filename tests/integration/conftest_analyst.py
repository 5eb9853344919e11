"""Helpers of the analyst tests (replay, tail, rescore): records, producing, reading, CLI env."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from streams.domain import CATEGORIES
from streamscore.kafka_config import producer_config, reader_config
from streamscore.settings import Settings, load_settings
from streamscore.topics import TopicSpec, ensure_topics


def analyst_settings(tmp: Path, source: str, **overrides: Any) -> Settings:
    return load_settings(
        sources=[{"name": source}],
        registry={"cache_dir": str(tmp / "schema-cache")},
        environment="test",
        **overrides,
    )


def cli_env(settings: Settings) -> dict[str, str]:
    """Environment that gives the CLI the same settings."""
    env = {
        "STREAMSCORE_SOURCES": json.dumps([{"name": s.name} for s in settings.sources]),
        "STREAMSCORE_REGISTRY__CACHE_DIR": str(settings.registry.cache_dir),
        "STREAMSCORE_ENVIRONMENT": "test",
    }
    p = settings.processor
    env["STREAMSCORE_PROCESSOR__MODELS_DIR"] = str(p.models_dir)
    env["STREAMSCORE_PROCESSOR__PRIMARY_MODEL"] = p.primary_model
    return env


def create_topic(settings: Settings, topic: str, partitions: int = 3) -> None:
    ensure_topics(settings, [TopicSpec(topic, partitions, 24 * 3600 * 1000)])


def transaction(i: int, source: str, event_time: datetime) -> dict[str, Any]:
    """A valid clean Transaction whose features vary with ``i``."""
    channel = ("online", "pos", "atm")[i % 3]
    return {
        "transaction_id": f"txn_{i:06d}_{uuid.uuid4().hex[:6]}",
        "source": source,
        "customer_id": f"cus_{i % 7:05d}",
        "customer_country": "DE",
        "merchant_id": None if i % 4 == 0 else f"mer_{i:04d}",
        "merchant_category": CATEGORIES[i % len(CATEGORIES)],
        "amount": 5.0 + 97.3 * i,
        "currency": "EUR",
        "amount_eur": 5.0 + 97.3 * i,
        "country": "DE" if i % 5 else "BR",
        "channel": channel,
        "card_present": channel != "online",
        "event_time": event_time,
        "fetched_at": event_time,
        "trace_id": uuid.uuid4().hex,
        "imputed_fields": ["merchant_id"] if i % 4 == 0 else [],
    }


def produce(settings: Settings, topic: str, records: list[tuple[str, bytes, int, int]]) -> None:
    """(key, value, partition, timestamp ms) in order; waits for every acknowledgement."""
    producer = Producer(producer_config(settings, "test"))
    errors: list[Any] = []
    for key, value, partition, ts in records:
        producer.produce(
            topic,
            key=key,
            value=value,
            partition=partition,
            timestamp=ts,
            on_delivery=lambda e, _m: errors.append(e),
        )
    assert producer.flush(20) == 0
    assert errors == [None] * len(records)


def read_topic(settings: Settings, topic: str, expect: int, timeout_s: float = 20) -> list[Message]:
    """Every record of ``topic`` from the beginning (at least ``expect`` of them)."""
    consumer = Consumer(reader_config(settings, "test"))
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(got) < expect and time.monotonic() < deadline:
            got += [m for m in consumer.consume(500, timeout=0.5) if m.error() is None]
        got += [m for m in consumer.consume(500, timeout=0.5) if m.error() is None]  # nothing more
    finally:
        consumer.close()
    return got


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def utc_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)
