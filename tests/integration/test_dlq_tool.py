"""`streamscore dlq list|inspect|redrive` against the real Kafka and registry: filters, decoding,
redrive of the original key and bytes to the original topic and partition, no group committed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streamscore.bootstrap import codec, prepare
from streamscore.contracts import RawRecord
from streamscore.dlq import DeadLetter
from streamscore.errors import ValidationError
from streamscore.kafka_config import admin_config, producer_config, reader_config
from streamscore.lag import LagProbe
from streamscore.settings import Settings
from streamscore.topics import dlq_topic, predictions_topic, raw_topic

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("stack")]
STREAMSCORE = str(Path(sys.executable).with_name("streamscore"))


def cli(settings: Settings, *args: str) -> Any:
    env = os.environ | {
        "STREAMSCORE_SOURCES": json.dumps([{"name": settings.sources[0].name}]),
        "STREAMSCORE_REGISTRY__CACHE_DIR": str(settings.registry.cache_dir),
        "STREAMSCORE_LOG_LEVEL": "WARNING",
    }
    out = subprocess.run(
        [STREAMSCORE, "dlq", *args, "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def read_all(settings: Settings, topic: str, partitions: int, expected: int) -> list[Any]:
    consumer = Consumer(reader_config(settings, "test-dlq"))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got: list[Any] = []
    deadline = time.monotonic() + 20
    while len(got) < expected and time.monotonic() < deadline:
        got += [m for m in consumer.consume(100, timeout=0.5) if m.error() is None]
    time.sleep(0.5)
    got += [m for m in consumer.consume(100, timeout=0.5) if m.error() is None]  # nothing extra
    consumer.close()
    return got


@pytest.fixture
def letters(make_settings: Any) -> tuple[Settings, bytes]:
    """Three letters in dlq.<source>: validate (Avro RawRecord), decode (garbage), sink-data (JSON)."""
    settings = make_settings()
    source = settings.sources[0].name
    registry = prepare(settings, "test", timeout_s=30)
    raw = RawRecord(
        source=source,
        record_id="r1",
        fetched_at=datetime.now(UTC),
        cursor="c1",
        payload='{"transaction_id": "r1", "amount": -5}',
        trace_id="t1",
    )
    avro_value = codec(registry, settings, raw_topic(source)).encode(raw.to_avro())
    raw_t, pred_t = raw_topic(source), predictions_topic(source)
    dead = [
        DeadLetter(
            source, "validate", ValidationError("amount: must be > 0"), b"r1", avro_value, raw_t, 1, 5, "r1"
        ),
        DeadLetter(source, "decode", "magic byte 7", b"r2", b"\x07garbage", raw_t, 2, 9, "r2"),
        DeadLetter(source, "sink-data", "document too large", b"r3", b'{"a": 1}', pred_t, 0, 3, "r3"),
    ]
    producer = Producer(producer_config(settings, "test-dlq"))
    for d in dead:
        producer.produce(dlq_topic(source), key=d.key, value=d.value, headers=d.headers())
    assert producer.flush(15) == 0
    return settings, avro_value


def test_list_filters_by_stage_and_time(letters: tuple[Settings, bytes]) -> None:
    settings, _ = letters
    everything = cli(settings, "list")
    assert [x["dlq"]["record.id"] for x in everything] == ["r1", "r2", "r3"]
    assert [x["dlq"]["stage"] for x in everything] == ["validate", "decode", "sink-data"]
    assert everything[0]["dlq"]["exception.class"] == "streamscore.errors.ValidationError"
    assert everything[0]["dlq"]["original.topic"] == raw_topic(settings.sources[0].name)
    only = cli(settings, "list", "--stage", "decode", "--stage", "sink-data", "--since", "1h")
    assert [x["dlq"]["record.id"] for x in only] == ["r2", "r3"]
    assert cli(settings, "list", "--until", "1h") == []
    assert cli(settings, "list", "--record-id", "r3")[0]["offset"] == 2
    assert [x["offset"] for x in cli(settings, "list", "--last", "2")] == [1, 2]


def test_inspect_decodes_avro_json_and_keeps_bytes(letters: tuple[Settings, bytes]) -> None:
    settings, _ = letters
    docs = cli(settings, "inspect")
    kinds = [d["value"]["kind"] for d in docs]
    assert kinds[0].startswith("avro:") and kinds[1:] == ["text", "json"]
    assert docs[0]["value"]["value"]["record_id"] == "r1"
    assert docs[0]["value"]["value"]["payload"] == '{"transaction_id": "r1", "amount": -5}'
    assert "ValidationError" in docs[0]["dlq"]["exception.stacktrace"]
    assert docs[2]["value"]["value"] == {"a": 1}
    assert cli(settings, "inspect", "--offset", "1")[0]["dlq"]["record.id"] == "r2"


def test_redrive_produces_original_key_bytes_and_partition(letters: tuple[Settings, bytes]) -> None:
    settings, avro_value = letters
    source = settings.sources[0].name
    dry = cli(settings, "redrive", "--stage", "validate", "--dry-run")
    assert [(r["topic"], r["partition"], r["skipped"]) for r in dry] == [(raw_topic(source), 1, "dry run")]

    done = cli(settings, "redrive", "--stage", "validate", "--stage", "decode")
    assert [(r["record_id"], r["topic"], r["partition"], r["skipped"]) for r in done] == [
        ("r1", raw_topic(source), 1, ""),
        ("r2", raw_topic(source), 2, ""),
    ]
    parts = settings.kafka.topic_partitions
    got = {m.key(): m for m in read_all(settings, raw_topic(source), parts, expected=2)}
    assert set(got) == {b"r1", b"r2"}  # the dry run produced nothing
    assert (got[b"r1"].value(), got[b"r1"].partition()) == (avro_value, 1)
    assert (got[b"r2"].value(), got[b"r2"].partition()) == (b"\x07garbage", 2)
    headers = dict(got[b"r1"].headers() or [])
    assert headers["streamscore.redrive.from"] == f"{dlq_topic(source)}:0:0".encode()
    assert headers["streamscore.redrive.attempt"] == b"2"
    assert not any(k.startswith("dlq.") for k in headers)

    # the tool never commits: no consumer group holds an offset on the DLQ or the raw topic
    admin = AdminClient(admin_config(settings))
    groups = [g.group_id for g in admin.list_consumer_groups().result().valid]
    probe = LagProbe(settings)
    for group in groups:
        committed = probe.committed(group)
        assert not {t for t, _ in committed} & {dlq_topic(source), raw_topic(source)}, group


def test_redrive_refuses_without_a_selection(letters: tuple[Settings, bytes]) -> None:
    settings, _ = letters
    env = os.environ | {"STREAMSCORE_SOURCES": json.dumps([{"name": settings.sources[0].name}])}
    out = subprocess.run([STREAMSCORE, "dlq", "redrive"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2 and "--all" in out.stderr
