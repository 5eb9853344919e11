"""Helpers for the sink's integration and fault tests: real Kafka, registry and MongoDB-wire server.

``SinkRun`` starts ``streamscore sink`` as a child process configured by environment variables
(unique source, consumer group, database and health port), so nothing is shared with other tests.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from pymongo import MongoClient

from streamscore.avro import AvroCodec
from streamscore.bootstrap import codec, prepare
from streamscore.dlq import parse_headers
from streamscore.kafka_config import consumer_config, producer_config, reader_config
from streamscore.settings import REPO_ROOT, Settings, load_settings
from streamscore.topics import dlq_topic, predictions_topic

MONGO_URL = load_settings().mongo.url.get_secret_value().rstrip("/")
MONGOSH = Path.home() / ".cache" / "streamscore" / "npm" / "node_modules" / ".bin" / "mongosh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prediction(source: str, i: int, version: str = "1", **over: Any) -> dict[str, Any]:
    """A valid Prediction for record ``txn_<i>``; every third one an anomaly."""
    now = datetime.now(UTC).replace(microsecond=(i % 1000) * 1000)
    score = (i % 100) / 100
    return {
        "record_id": f"txn_{i:012d}",
        "source": source,
        "event_time": now - timedelta(minutes=5),
        "model_name": "fraud-gbt",
        "model_version": version,
        "variant": "primary" if version == "1" else "candidate",
        "score": score,
        "label": "fraud" if score >= 0.5 else "legit",
        "confidence": max(score, 1 - score),
        "low_confidence": 0.4 < score < 0.6,
        "anomaly": i % 3 == 0,
        "reasons": ["amount_eur"] if i % 3 == 0 else [],
        "customer_id": f"cus_{i % 50:05d}",
        "amount_eur": 10.0 + i,
        "fetched_at": now - timedelta(seconds=2),
        "scored_at": now - timedelta(seconds=1),
        "trace_id": f"trace-{i}",
    } | over


class Predictions:
    """Produces framed Prediction values (and raw bad bytes) to ``predictions.<source>``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.source = settings.sources[0].name
        self.topic = predictions_topic(self.source)
        self.registry = prepare(settings, "test-sink", timeout_s=60)
        self.codec: AvroCodec = codec(self.registry, settings, self.topic)
        big = {"message.max.bytes": 64 * 1024 * 1024}
        self.producer = Producer(producer_config(self.settings, "test-sink", **big))

    def send(self, items: list[tuple[str, bytes | None]]) -> None:
        errors: list[Any] = []
        for key, value in items:
            self.producer.produce(
                self.topic, key=key, value=value, on_delivery=lambda e, _m: e and errors.append(e)
            )
            self.producer.poll(0)
        assert self.producer.flush(60) == 0
        assert not errors, errors

    def encode(self, record: dict[str, Any]) -> tuple[str, bytes]:
        return record["record_id"], self.codec.encode(record)


class SinkRun:
    """``streamscore sink`` as a child process with its own group, database and port."""

    def __init__(self, settings: Settings, database: str, group: str, **env: str) -> None:
        self.settings = settings
        self.database = database
        self.group = group
        self.port = free_port()
        self.log_path = Path(f"/tmp/streamscore-test-sink-{group}-{self.port}.log")
        self.env = (
            os.environ
            | {
                "STREAMSCORE_SOURCES": json.dumps([{"name": s.name} for s in settings.sources]),
                "STREAMSCORE_MONGO__DATABASE": database,
                "STREAMSCORE_SINK__APP_ID": group,
                "STREAMSCORE_SINK__BATCH_WITHIN_S": "0.2",
                "STREAMSCORE_SINK__DATADIR": "/tmp/streamscore-test-faust",
                "STREAMSCORE_HEALTH__SINK_PORT": str(self.port),
                "STREAMSCORE_REGISTRY__CACHE_DIR": str(settings.registry.cache_dir),
                "STREAMSCORE_LOG_FORMAT": "json",
                "STREAMSCORE_ENVIRONMENT": "test",
            }
            | env
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SinkRun:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamscore.cli", "sink"],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    def get(self, path: str) -> tuple[int, dict[str, Any] | str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as resp:
                body = resp.read().decode()
                status = resp.status
        except urllib.error.HTTPError as exc:
            body, status = exc.read().decode(), exc.code
        except OSError:
            return 0, ""
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    def stop(self, timeout_s: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return int(self.proc.returncode)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


def wait_until(what: str, check: Callable[[], bool], timeout_s: float, sink: SinkRun | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if sink is not None and sink.proc is not None and sink.proc.poll() is not None:
            code = sink.proc.returncode
            raise AssertionError(f"sink exited {code} while waiting for {what}:\n{sink.log()}")
        time.sleep(0.5)
    tail = f"\n--- sink log ---\n{sink.log()}" if sink else ""
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}{tail}")


def collection(database: str) -> Any:
    return MongoClient(MONGO_URL, serverSelectionTimeoutMS=5000, tz_aware=True)[database]["predictions"]


def committed_all(settings: Settings, group: str, topic: str) -> bool:
    """Whether ``group`` committed up to the log end of every partition of ``topic``."""
    consumer = Consumer(consumer_config(settings, group, "test-sink-lag"))
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        tps = [TopicPartition(topic, p) for p in meta.partitions]
        committed = consumer.committed(tps, timeout=10)
        for tp in committed:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            if high > 0 and tp.offset < high:
                return False
        return True
    finally:
        consumer.close()


def dead_letters(settings: Settings, expected: int, timeout_s: float = 30) -> list[dict[str, Any]]:
    """The letters of ``dlq.<source>`` (headers parsed) once ``expected`` arrived and 2 s passed."""
    topic = dlq_topic(settings.sources[0].name)
    consumer = Consumer(reader_config(settings, "test-sink-dlq"))
    consumer.subscribe([topic])
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msgs = [m for m in consumer.consume(100, timeout=0.5) if m.error() is None]
            for m in msgs:
                got.append({"key": m.key(), "value": m.value(), **parse_headers(m.headers())})
            quiet_since = time.monotonic() if msgs else quiet_since
            if len(got) >= expected and time.monotonic() - quiet_since > 2:
                break
    finally:
        consumer.close()
    return got


def mongosh_eval(database: str, script: str) -> Any:
    """Run ``script`` in mongosh (the npm package) and parse the EJSON it prints."""
    from bson import json_util

    assert MONGOSH.exists(), f"mongosh not installed at {MONGOSH} (deploy/local/stack.sh up installs it)"
    out = subprocess.run(
        [str(MONGOSH), "--quiet", "--norc", f"{MONGO_URL}/{database}", "--eval", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, f"mongosh failed ({out.returncode}): {out.stderr[-2000:]}"
    return json_util.loads(out.stdout.strip().splitlines()[-1])
