"""The processor end to end on the real local stack (Kafka + Apicurio), run as `streamscore process`.

Good and known-bad raw records go into a unique ``raw.<source>``; every good id must come out in
``predictions.<source>`` and every bad one in ``dlq.<source>`` with its stage and original bytes;
nothing else. Afterwards the processor's committed offsets cover the whole raw topic.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streamscore.bootstrap import codec, prepare
from streamscore.dlq import parse_headers
from streamscore.kafka_config import consumer_config, producer_config, reader_config
from streamscore.settings import REPO_ROOT, Settings
from streamscore.topics import clean_topic, dlq_topic, predictions_topic, raw_topic, shadow_topic
from tests.conftest import unique
from tests.unit.conftest_processor import good_payload

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
N_GOOD = 300
CANDIDATE_SHARE = 0.3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raw_record(settings: Settings, source: str, record_id: str, payload: str) -> bytes:
    raw = codec(prepare_registry(settings), settings, raw_topic(source))
    return raw.encode(
        {
            "source": source,
            "record_id": record_id,
            "fetched_at": datetime.now(UTC),
            "cursor": "c1",
            "payload": payload,
            "trace_id": f"trace-{record_id}",
        }
    )


_registries: dict[int, Any] = {}


def prepare_registry(settings: Settings) -> Any:
    key = id(settings)
    if key not in _registries:
        _registries[key] = prepare(settings, "test-processor", timeout_s=30)
    return _registries[key]


def read_all(settings: Settings, topic: str, expected: int, timeout_s: float) -> list[Any]:
    """Messages of ``topic`` until ``expected`` arrived and 2 s passed quietly, or the timeout."""
    consumer = Consumer(reader_config(settings, "test-processor"))
    consumer.subscribe([topic])
    got: list[Any] = []
    deadline = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(500, timeout=0.5)
            msgs = [m for m in batch if m.error() is None]
            got += msgs
            now = time.monotonic()
            if msgs:
                quiet_since = now
            elif len(got) >= expected and now - quiet_since > 2:
                break
    finally:
        consumer.close()
    return got


@pytest.fixture
def processor_env(
    stack: None, make_settings: Any, tmp_path: Path
) -> Iterator[tuple[Settings, dict[str, str]]]:
    source = unique("proc")
    settings = make_settings(source)
    env = os.environ | {
        "STREAMSCORE_SOURCES": json.dumps([{"name": source}]),
        "STREAMSCORE_REGISTRY__CACHE_DIR": str(tmp_path / "schema-cache"),
        "STREAMSCORE_HEALTH__PROCESSOR_PORT": str(free_port()),
        "STREAMSCORE_PROCESSOR__APP_ID": f"streamscore-processor-{source}",
        "STREAMSCORE_PROCESSOR__CANDIDATE_MODEL": "fraud:v2",
        "STREAMSCORE_PROCESSOR__CANDIDATE_SHARE": str(CANDIDATE_SHARE),
        "STREAMSCORE_PROCESSOR__SHADOW_MODEL": "fraud:v2",
        "STREAMSCORE_LOG_FORMAT": "json",
    }
    yield settings, env


@pytest.mark.parametrize("fused", [False, True], ids=["two-stage", "fused"])
def test_good_records_become_predictions_and_bad_ones_dead_letters(
    processor_env: tuple[Settings, dict[str, str]], tmp_path: Path, fused: bool
) -> None:
    settings, env = processor_env
    env["STREAMSCORE_PROCESSOR__FUSED"] = str(fused).lower()
    source = settings.sources[0].name
    prepare_registry(settings)
    good = {f"txn_{i:012d}": json.dumps(good_payload(i, amount=10 + i % 50)) for i in range(N_GOOD)}
    bad_validate = {
        "bad_amount": json.dumps(good_payload(9001, amount=-5)),
        "bad_currency": json.dumps(good_payload(9002, currency="XXX")),
        "bad_json": "{not json",
        "bad_country": json.dumps(good_payload(9003, country="ZZ")),
    }
    values = {rid: raw_record(settings, source, rid, text) for rid, text in (good | bad_validate).items()}
    values["bad_decode_garbage"] = b"this is not avro"
    values["bad_decode_schema"] = b"\x00\x7f\xff\xff\xf0avro-ish"  # unknown schema id
    expected_stage = dict.fromkeys(bad_validate, "validate") | {
        "bad_decode_garbage": "decode",
        "bad_decode_schema": "decode",
    }
    producer = Producer(producer_config(settings, "test-processor"))
    for rid, value in values.items():
        producer.produce(raw_topic(source), key=rid.encode(), value=value)
    assert producer.flush(15) == 0

    log = (tmp_path / "processor.log").open("w")
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamscore.cli", "process"], cwd=REPO_ROOT, env=env, stdout=log, stderr=log
    )
    try:
        preds = read_all(settings, predictions_topic(source), N_GOOD, timeout_s=60)
        dead = read_all(settings, dlq_topic(source), len(expected_stage), timeout_s=5)
        shadow = read_all(settings, shadow_topic(source), N_GOOD, timeout_s=10)
        health = _get(f"http://127.0.0.1:{env['STREAMSCORE_HEALTH__PROCESSOR_PORT']}/readyz")
        metrics_text = _get(f"http://127.0.0.1:{env['STREAMSCORE_HEALTH__PROCESSOR_PORT']}/metrics")[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    elapsed = time.monotonic() - started
    output = (tmp_path / "processor.log").read_text()

    pred_codec = codec(prepare_registry(settings), settings, predictions_topic(source))
    keys = [m.key().decode() for m in preds]
    assert set(keys) == set(good), output[-3000:]
    decoded = [pred_codec.decode(m.value()) for m in preds]
    assert {p["record_id"] for p in decoded} == set(good)
    by_variant = {v: sum(1 for p in decoded if p["variant"] == v) for v in ("primary", "candidate")}
    assert by_variant["primary"] + by_variant["candidate"] >= N_GOOD
    assert 0.15 * N_GOOD < by_variant["candidate"] < 0.45 * N_GOOD
    assert all(p["trace_id"] == f"trace-{p['record_id']}" for p in decoded)
    assert {pred_codec.decode(m.value())["variant"] for m in shadow} == {"shadow"}
    assert {m.key().decode() for m in shadow} == set(good)

    letters = {m.key().decode(): (parse_headers(m.headers()), m.value()) for m in dead}
    assert set(letters) == set(expected_stage)
    for rid, (headers, value) in letters.items():
        assert headers["stage"] == expected_stage[rid], rid
        assert value == values[rid], rid  # the original bytes, unchanged
        assert headers["original.topic"] == raw_topic(source)
    assert len(dead) == len(expected_stage)

    assert health[0] == 200, (health, output[-3000:])
    assert f'streamscore_processor_records_in_total{{agent="clean",source="{source}"}}' in metrics_text
    assert proc.returncode is not None
    topics = [raw_topic(source)] if fused else [raw_topic(source), clean_topic(source)]
    _assert_offsets_committed(settings, env["STREAMSCORE_PROCESSOR__APP_ID"], topics)
    clean = read_all(settings, clean_topic(source), N_GOOD, timeout_s=5)
    assert {m.key().decode() for m in clean} == set(good)
    print(f"processor test: {len(values)} records through in {elapsed:.1f}s")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def _assert_offsets_committed(settings: Settings, group: str, topics: list[str]) -> None:
    """The processor committed its input topics up to their ends (after delivering the outputs)."""
    consumer = Consumer(consumer_config(settings, group, "test-offsets"))
    try:
        for topic in topics:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            tps = [TopicPartition(topic, p) for p in meta.partitions]
            committed = consumer.committed(tps, timeout=10)
            for tp in committed:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
                assert tp.offset == high, (topic, tp.partition, tp.offset, high)
    finally:
        consumer.close()


def test_a_killed_processor_loses_nothing_after_restart(
    processor_env: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    """SIGKILL mid-stream (no graceful stop), restart: every record still gets its prediction."""
    settings, env = processor_env
    source = settings.sources[0].name
    env = env | {
        "STREAMSCORE_PROCESSOR__CLEAN_BATCH_SIZE": "100",
        "STREAMSCORE_PROCESSOR__SCORE_BATCH_SIZE": "100",
        "STREAMSCORE_PROCESSOR__SESSION_TIMEOUT_S": "6",  # the killed member leaves the group soon
    }
    n = 3000
    ids = [f"txn_{i:012d}" for i in range(n)]
    producer = Producer(producer_config(settings, "test-processor"))
    for i, rid in enumerate(ids):
        producer.produce(
            raw_topic(source),
            key=rid.encode(),
            value=raw_record(settings, source, rid, json.dumps(good_payload(i))),
        )
    assert producer.flush(15) == 0

    watcher = Consumer(reader_config(settings, "test-processor-kill"))
    log = (tmp_path / "processor.log").open("w")
    cmd = [sys.executable, "-m", "streamscore.cli", "process"]
    first = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _end(watcher, predictions_topic(source)) < 300:
            time.sleep(0.2)
    finally:
        first.kill()  # SIGKILL: no commit on the way out
        first.wait(10)
    killed_at = _end(watcher, predictions_topic(source))
    assert 0 < killed_at < n, "the kill must land mid-stream"
    second = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=log)
    try:
        preds = read_all(settings, predictions_topic(source), n, timeout_s=60)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
        log.close()
        watcher.close()
    keys = {m.key().decode() for m in preds}
    missing = sorted(set(ids) - keys)
    assert not missing, (len(missing), missing[:5], (tmp_path / "processor.log").read_text()[-3000:])
    assert keys == set(ids)
    assert read_all(settings, dlq_topic(source), 0, timeout_s=3) == []
    # at-least-once: what was cleaned or scored but not committed before the kill comes out again
    print(f"killed after {killed_at} predictions; {len(preds)} predictions for {n} ids after restart")


def _end(consumer: Consumer, topic: str) -> int:
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    return sum(
        consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions
    )


def test_records_of_an_aborted_transaction_are_never_processed(
    processor_env: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    """raw.<source> is written in transactions (the poller); an aborted one is not input (read_committed)."""
    settings, env = processor_env
    source = settings.sources[0].name
    prepare_registry(settings)
    timeouts = {"transaction.timeout.ms": 60_000, "delivery.timeout.ms": 60_000}  # as the poller's
    producer = Producer(
        producer_config(settings, "test-processor", transactional_id=f"tx-{source}") | timeouts
    )
    producer.init_transactions(15)
    batches = {
        "aborted": [f"aborted_{i:03d}" for i in range(40)],
        "kept": [f"kept_{i:03d}" for i in range(40)],
    }
    for kind, ids in batches.items():
        producer.begin_transaction()
        for i, rid in enumerate(ids):
            value = raw_record(settings, source, rid, json.dumps(good_payload(i) | {"id": rid}))
            producer.produce(raw_topic(source), key=rid.encode(), value=value)
        producer.flush(15)
        (producer.abort_transaction if kind == "aborted" else producer.commit_transaction)(15)

    log = (tmp_path / "processor.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamscore.cli", "process"], cwd=REPO_ROOT, env=env, stdout=log, stderr=log
    )
    try:
        preds = read_all(settings, predictions_topic(source), len(batches["kept"]), timeout_s=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()
    assert {m.key().decode() for m in preds} == set(batches["kept"]), (
        tmp_path / "processor.log"
    ).read_text()[-2000:]
    assert read_all(settings, dlq_topic(source), 0, timeout_s=3) == []
