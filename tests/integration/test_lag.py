"""`streamscore lag` against the real Kafka: exact per-partition lag, equal to Kafka's own
consumer-groups tool; lag in seconds = age of the oldest unconsumed record; 0 in both units once
the consumer caught up; never-committed and retention-deleted offsets counted from the log start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from streamscore import metrics
from streamscore.exporter import LagGauges
from streamscore.kafka_config import admin_config, consumer_config, producer_config
from streamscore.lag import BacklogCheck, LagProbe
from streamscore.settings import Settings, load_settings
from streamscore.topics import DAY_MS, TopicSpec, ensure_topics, predictions_topic
from tests.conftest import unique

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
STREAMSCORE = str(Path(sys.executable).with_name("streamscore"))
KAFKA_TOOL = ROOT / "deploy" / "local" / "kafka-tool.sh"
AGE_S = 600  # the records' timestamps lie this far in the past


def produce(settings: Settings, topic: str, counts: dict[int, int], base_ms: int) -> None:
    """counts[p] records on partition p; record i has timestamp base_ms + i seconds."""
    producer = Producer(producer_config(settings, "test-lag"))
    for partition, n in counts.items():
        for i in range(n):
            producer.produce(
                topic, key=f"k{i}", value=f"v{i}", partition=partition, timestamp=base_ms + i * 1000
            )
    assert producer.flush(30) == 0


def commit(settings: Settings, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """What a consumer leaves behind when it stops: committed offsets, no live member."""
    consumer = Consumer(consumer_config(settings, group, "test-lag"))
    consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
    consumer.close()


def consume_all(settings: Settings, group: str, topic: str, expected: int) -> None:
    """A real consumer of ``group`` reads every record and commits (catches up)."""
    consumer = Consumer(consumer_config(settings, group, "test-lag", **{"session.timeout.ms": 6000}))
    consumer.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + 30
    while seen < expected and time.monotonic() < deadline:
        for msg in consumer.consume(100, timeout=0.5):
            if msg.error() is None:
                seen += 1
                consumer.store_offsets(msg)
    consumer.commit(asynchronous=False)
    consumer.close()
    assert seen == expected


def streamscore_lag(
    group: str, env: dict[str, str] | None = None, pass_group: bool = True
) -> dict[tuple[str, int], dict[str, Any]]:
    """Rows of ``group`` printed by ``streamscore lag --json`` (``--group`` only if pass_group)."""
    out = subprocess.run(
        [STREAMSCORE, "lag", "--json", *(["--group", group] if pass_group else [])],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ | {"STREAMSCORE_LOG_LEVEL": "WARNING"} | (env or {}),
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    return {(r["topic"], r["partition"]): r for r in doc["partitions"] if r["group"] == group}


def kafka_tool_lag(group: str) -> dict[tuple[str, int], tuple[int, int, int]]:
    """(current offset, log-end offset, lag) per partition, as Kafka's consumer-groups tool says."""
    out = subprocess.run(
        [
            str(KAFKA_TOOL),
            "consumer-groups",
            "--bootstrap-server",
            load_settings().kafka.bootstrap_servers,
            "--describe",
            "--group",
            group,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 0, out.stderr
    rows: dict[tuple[str, int], tuple[int, int, int]] = {}
    for line in out.stdout.splitlines():
        cols = line.split()
        if len(cols) >= 6 and cols[0] == group:
            topic, part, current, end, lag = cols[1], int(cols[2]), cols[3], cols[4], cols[5]
            rows[(topic, part)] = (int(current), int(end), int(lag))
    assert rows, f"tool printed no partition rows:\n{out.stdout}\n{out.stderr}"
    return rows


def test_lag_matches_kafka_tool_then_zero_after_catch_up(stack: None, make_settings: Any) -> None:
    settings = make_settings()
    topic, group = unique("lagtest-"), unique("laggroup-")
    ensure_topics(settings, [TopicSpec(topic, 3, DAY_MS)])
    base_ms = int((time.time() - AGE_S) * 1000)
    counts = {0: 12, 1: 8, 2: 5}
    produce(settings, topic, counts, base_ms)
    # p0: 4 of 12 consumed; p1: caught up (idle, old records); p2: never committed.
    commit(settings, group, {(topic, 0): 4, (topic, 1): 8})

    ours = streamscore_lag(group)
    now = time.time()
    tool = kafka_tool_lag(group)

    assert set(ours) == {(topic, 0), (topic, 1), (topic, 2)}
    for key, (current, end, lag) in tool.items():
        row = ours[key]
        assert (row["committed_offset"], row["log_end_offset"], row["lag_messages"]) == (current, end, lag)
    assert [ours[(topic, p)]["lag_messages"] for p in range(3)] == [8, 0, 5]
    # age of the oldest unconsumed record: record 4 on p0, record 0 on p2; p1 idle → 0, not 10 min
    assert ours[(topic, 0)]["lag_seconds"] == pytest.approx(now - (base_ms / 1000 + 4), abs=5)
    assert ours[(topic, 2)]["lag_seconds"] == pytest.approx(now - base_ms / 1000, abs=5)
    assert ours[(topic, 1)]["lag_seconds"] == 0
    assert ours[(topic, 2)]["status"] == "no-commit" and ours[(topic, 2)]["committed_offset"] is None
    assert ours[(topic, 0)]["status"] == ours[(topic, 1)]["status"] == "ok"

    # the exporter's gauges and the readiness backlog check see the same backlog
    gauges = LagGauges()
    gauges.update(LagProbe(settings).measure([group]))
    sample = metrics.CONSUMER_LAG_MESSAGES.labels(group, topic, "0")._value.get()
    assert sample == 8
    assert metrics.CONSUMER_LAG_SECONDS.labels(group, topic, "2")._value.get() > AGE_S - 10
    assert BacklogCheck(settings, group).refresh() is True

    consume_all(settings, group, topic, expected=(12 - 4) + 0 + 5)

    ours = streamscore_lag(group)
    tool = kafka_tool_lag(group)
    assert set(tool) == set(ours)
    for key, row in ours.items():
        assert tool[key] == (counts[key[1]], counts[key[1]], 0)
        assert (row["committed_offset"], row["lag_messages"], row["lag_seconds"]) == (counts[key[1]], 0, 0)
    assert BacklogCheck(settings, group).refresh() is False
    gauges.update(LagProbe(settings).measure([group]))
    assert metrics.CONSUMER_LAG_SECONDS.labels(group, topic, "2")._value.get() == 0


def test_committed_offset_deleted_by_retention_counts_from_log_start(stack: None, make_settings: Any) -> None:
    settings = make_settings()
    topic, group = unique("lagexp-"), unique("laggroup-")
    ensure_topics(settings, [TopicSpec(topic, 1, DAY_MS)])
    base_ms = int((time.time() - AGE_S) * 1000)
    produce(settings, topic, {0: 10}, base_ms)
    commit(settings, group, {(topic, 0): 2})
    # retention (here: the delete-records API) removes records 0..5 before the group read 2..5
    admin = AdminClient(admin_config(settings))
    for fut in admin.delete_records([TopicPartition(topic, 0, 6)]).values():
        fut.result()

    row = streamscore_lag(group)[(topic, 0)]
    tool = kafka_tool_lag(group)[(topic, 0)]

    assert row["status"] == "expired"
    assert (row["committed_offset"], row["log_start_offset"], row["log_end_offset"]) == (2, 6, 10)
    assert row["lag_messages"] == 4 and row["expired_messages"] == 4
    assert row["lag_seconds"] == pytest.approx(time.time() - (base_ms / 1000 + 6), abs=5)
    # Kafka's tool counts from the deleted offset; we count what is still there to consume.
    assert tool == (2, 10, 8)


def test_pipeline_groups_measured_from_settings_without_group_admin_calls(
    stack: None, make_settings: Any
) -> None:
    """Default `streamscore lag`: the sink's group (from settings) on predictions.<source>, listed
    before it ever committed (lag from the log start), then exact per partition like Kafka's tool."""
    settings = make_settings()
    source = settings.sources[0].name
    group = unique("streamscore-sink-lagtest-")
    env = {
        "STREAMSCORE_SOURCES": json.dumps([{"name": source}]),
        "STREAMSCORE_SINK__APP_ID": group,
        "STREAMSCORE_PROCESSOR__APP_ID": unique("streamscore-processor-lagtest-"),
    }
    ensure_topics(settings)
    topic = predictions_topic(source)
    parts = settings.kafka.topic_partitions
    produce(settings, topic, dict.fromkeys(range(parts), 4), int((time.time() - 60) * 1000))

    before = streamscore_lag(group, env, pass_group=False)
    assert {k: (r["committed_offset"], r["lag_messages"], r["status"]) for k, r in before.items()} == {
        (topic, p): (None, 4, "no-commit") for p in range(parts)
    }
    commit(settings, group, {(topic, p): p for p in range(parts)})
    after = streamscore_lag(group, env, pass_group=False)
    tool = kafka_tool_lag(group)
    assert set(tool) == set(after)
    for key, (current, end, lag) in tool.items():
        assert (after[key]["committed_offset"], after[key]["log_end_offset"]) == (current, end)
        assert after[key]["lag_messages"] == lag == 4 - key[1]
