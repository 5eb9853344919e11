"""The fault tests' harness: the whole pipeline as child processes, a ledger, and the invariant.

A :class:`Pipeline` runs ``streamscore demo-api``, ``poll``, ``process`` (one or more workers) and
``sink`` as separate processes on a unique source, consumer groups and MongoDB database, with
free ports, against the stack the settings name (``STREAMSCORE_*`` environment). Each child can
be killed (-9), stopped (SIGTERM/SIGINT) and restarted.

The invariant, checked by :meth:`Pipeline.assert_invariant` once everything drained:

- the demo API's ledger (every record it served in a complete response) holds every record;
- MongoDB holds exactly one document per valid ledger id, with the ``_id``
  ``<source>:<id>:fraud:<version>`` of the model version the A/B split gives that id, and nothing
  else (no lost record, no duplicate, no stray version);
- ``dlq.<source>`` holds exactly the records the demo data makes invalid (``docs/demo-data.md``:
  a missing/negative amount or the unknown currency ``XXX``, judged on the JSON the API serves),
  each at stage ``validate``, plus whatever the test meant to fail, and nothing else;
- neither consumer group has a readable record waiting after its committed offset.

Which ids are invalid is judged from the served JSON by the documented policy, not by the
pipeline's own cleaning code.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from pymongo import MongoClient

from streams.scoring import CANDIDATE, assign_variant
from streamscore.dlq import parse_headers
from streamscore.kafka_config import consumer_config, reader_config
from streamscore.lag import pipeline_groups
from streamscore.settings import REPO_ROOT, Settings, load_settings
from streamscore.topics import dlq_topic, predictions_topic
from tests.conftest import unique

PY = sys.executable
MODEL = "fraud"
PRIMARY_VERSION, CANDIDATE_VERSION = "v1", "v2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, Any]:
    """(status, JSON body or text); status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            status, body = resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read().decode()
    except OSError:
        return 0, ""
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


class ChildDied(AssertionError):
    """A child process exited while the test expected it to run."""


@dataclass
class Child:
    """One ``streamscore`` command as a child process; restartable, its output in one log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    exits: list[int] = field(default_factory=list)

    def start(self) -> Child:
        assert not self.alive, f"{self.name} already running"
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts} of {self.name} at {time.time():.3f} =====\n".encode())
            self.proc = subprocess.Popen(
                self.argv, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def send(self, sig: signal.Signals) -> None:
        assert self.proc is not None and self.alive, f"{self.name} is not running"
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float) -> int | None:
        """Exit code once exited within ``timeout_s``, else None."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None
        self.exits.append(code)
        return code

    def kill9(self) -> None:
        self.send(signal.SIGKILL)
        code = self.wait(15)
        assert code == -signal.SIGKILL, f"{self.name}: kill -9 gave exit {code}"

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 30.0) -> tuple[int, float]:
        """Signal and wait: (exit code, seconds to exit). Kills it (and fails) after ``timeout_s``."""
        started = time.monotonic()
        self.send(sig)
        code = self.wait(timeout_s)
        elapsed = time.monotonic() - started
        if code is None:
            dump = self.stack_dump()
            self.kill9()
            raise AssertionError(
                f"{self.name} did not exit within {timeout_s}s of {sig.name}:\n{self.tail()}\n{dump}"
            )
        return code, elapsed

    def stack_dump(self) -> str:
        """Python stacks of the running child (py-spy, when installed), for a hang's diagnosis."""
        spy = Path(PY).with_name("py-spy")
        if not spy.exists() or not self.alive:
            return ""
        try:
            out = subprocess.run(
                [str(spy), "dump", "--pid", str(self.pid)], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"(py-spy dump failed: {exc})"
        return f"--- py-spy dump of {self.name} ---\n{out.stdout[-8000:]}{out.stderr[-1000:]}"

    def ensure_stopped(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(15)

    def get(self, path: str) -> tuple[int, Any]:
        assert self.port is not None, f"{self.name} has no HTTP port"
        return http_get(f"http://127.0.0.1:{self.port}{path}")

    def tail(self, chars: int = 5000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass(frozen=True)
class PipelineConfig:
    """The demo API's stream and the pipeline's knobs for one test."""

    backlog: int = 1000
    rate_per_s: float = 300.0
    max_records: int = 5000
    seed: int = 42
    dirty: float = 1.0
    page_size: int = 200
    candidate_share: float = 0.3
    stall_after_s: float = 60.0


@dataclass
class Expected:
    """What the ledger says must end where."""

    ledger: list[str]
    documents: dict[str, str]  # _id -> record id
    invalid: set[str]


class Pipeline:
    """The pipeline of one fault test (see the module docstring)."""

    def __init__(self, tmp_path: Path, config: PipelineConfig | None = None, **env: str) -> None:
        self.tmp = tmp_path
        self.config = c = config or PipelineConfig()
        self.source = unique("flt")
        self.database = unique("fltdb_")
        self.processor_group = f"streamscore-processor-{self.source}"
        self.sink_group = f"streamscore-sink-{self.source}"
        self.api_port = free_port()
        self.hook_log = tmp_path / "hooks.jsonl"
        cache = tmp_path / "schema-cache"
        self.source_settings: dict[str, Any] = {
            "name": self.source,
            "url": f"http://127.0.0.1:{self.api_port}/transactions",
            "page_size": c.page_size,
            "rate_limit_per_s": 100.0,
            "poll_interval_s": 0.2,
            "backoff_initial_s": 0.05,
            "backoff_cap_s": 0.5,
            "failure_cooldown_s": 1.0,
            "read_timeout_s": 2.0,
            "total_timeout_s": 5.0,
        }
        self.settings: Settings = load_settings(
            sources=[self.source_settings],
            registry={"cache_dir": str(cache)},
            processor={"app_id": self.processor_group},
            sink={"app_id": self.sink_group},
            mongo={"database": self.database},
            environment="test",
        )
        base = dict(os.environ)
        base.pop("STREAMSCORE_CONFIG", None)
        self.env = (
            base
            | {
                "STREAMSCORE_SOURCES": json.dumps([self.source_settings]),
                "STREAMSCORE_REGISTRY__CACHE_DIR": str(cache),
                "STREAMSCORE_PROCESSOR__APP_ID": self.processor_group,
                "STREAMSCORE_PROCESSOR__CANDIDATE_MODEL": f"{MODEL}:{CANDIDATE_VERSION}",
                "STREAMSCORE_PROCESSOR__CANDIDATE_SHARE": str(c.candidate_share),
                "STREAMSCORE_SINK__APP_ID": self.sink_group,
                "STREAMSCORE_SINK__BATCH_WITHIN_S": "0.2",
                "STREAMSCORE_SINK__DATADIR": str(tmp_path / "faust"),
                "STREAMSCORE_MONGO__DATABASE": self.database,
                "STREAMSCORE_HEALTH__STALL_AFTER_S": str(c.stall_after_s),
                "STREAMSCORE_LOG_FORMAT": "json",
                "STREAMSCORE_LOG_LEVEL": "INFO",
                "STREAMSCORE_ENVIRONMENT": "test",
                "STREAMSCORE_FAULT_HOOK_LOG": str(self.hook_log),
            }
            | env
        )
        self.api = self._child(
            "demo-api",
            "demo-api",
            None,
            STREAMSCORE_DEMO_API__PORT=str(self.api_port),
            STREAMSCORE_DEMO_API__BACKLOG=str(c.backlog),
            STREAMSCORE_DEMO_API__RATE_PER_S=str(c.rate_per_s),
            STREAMSCORE_DEMO_API__MAX_RECORDS=str(c.max_records),
            STREAMSCORE_DEMO_API__SEED=str(c.seed),
            STREAMSCORE_DEMO_API__DIRTY=str(c.dirty),
        )
        self.poller = self._child("poller", "poll", "STREAMSCORE_HEALTH__POLLER_PORT")
        self.processors: list[Child] = [self.new_processor()]
        self.sink = self._child("sink", "sink", "STREAMSCORE_HEALTH__SINK_PORT")
        self._expected: Expected | None = None
        self._mongo: MongoClient[Any] | None = None

    # --- children -------------------------------------------------------------------------
    def _child(self, name: str, command: str, port_env: str | None, hooks: Any = None, **env: str) -> Child:
        port = free_port() if port_env else None
        child_env = self.env | env | ({port_env: str(port)} if port_env else {})
        module = "streamscore.cli"
        if hooks is not None:
            module = "tests.faults.hooked"
            child_env["STREAMSCORE_FAULT_HOOKS"] = json.dumps(hooks)
        return Child(name, [PY, "-m", module, command], child_env, self.tmp / f"{name}.log", port)

    def new_processor(self, hooks: Any = None, **env: str) -> Child:
        n = len(getattr(self, "processors", []))
        return self._child(f"processor-{n}", "process", "STREAMSCORE_HEALTH__PROCESSOR_PORT", hooks, **env)

    def hooked(self, child: Child, hooks: list[dict[str, Any]]) -> Child:
        """A copy of ``child`` (same name, port, log) that runs with fault hooks."""
        assert not child.alive
        env = child.env | {"STREAMSCORE_FAULT_HOOKS": json.dumps(hooks)}
        argv = [PY, "-m", "tests.faults.hooked", child.argv[-1]]
        return Child(child.name, argv, env, child.log_path, child.port)

    @property
    def processor(self) -> Child:
        return self.processors[0]

    def children(self) -> list[Child]:
        return [self.api, self.poller, *self.processors, self.sink]

    def start(self, *which: Child) -> None:
        for child in which or self.children():
            child.start()

    def ready(self, child: Child) -> bool:
        status, _ = child.get("/readyz")
        return status == 200

    def poller_started(self) -> bool:
        """The poller has its sources (topics, contracts, cursors, publisher) set up."""
        _, body = self.poller.get("/readyz")
        checks = body.get("checks", {}) if isinstance(body, dict) else {}
        source = checks.get(f"source:{self.source}", {})
        return bool(source) and "kafka publisher not ready" not in source.get("detail", "")

    def start_streaming(self, timeout_s: float = 180.0) -> float:
        """Start the pipeline, then the demo API once every stage is up (the stream starts then).

        Returns the seconds the stages took to come up.
        """
        stages = [*self.processors, self.sink, self.poller]
        self.start(*stages)
        took = self.wait_until(
            "the stages to come up",
            lambda: all(self.ready(c) for c in [*self.processors, self.sink]) and self.poller_started(),
            timeout_s,
            stages,
        )
        self.api.start()
        self.wait_until("the first records served", lambda: self.served() > 0, 60, self.children())
        return took

    def stop_all(self) -> None:
        for child in reversed(self.children()):
            if child.alive:
                with contextlib.suppress(AssertionError):
                    child.stop(signal.SIGTERM, timeout_s=20)
            child.ensure_stopped()

    def status(self) -> str:
        """One line: served, stored, and each child's state and readiness."""
        parts = [f"served={self.served()}", f"stored={self.stored()}"]
        for child in self.children():
            state = "up" if child.alive else f"exited{child.exits[-1:]}" if child.exits else "down"
            if child.alive and child.port is not None:
                status, body = child.get("/readyz")
                failing = []
                if isinstance(body, dict):
                    failing = [
                        f"{n}: {c.get('detail', '')[:80]}"
                        for n, c in body.get("checks", {}).items()
                        if not c.get("ok")
                    ]
                state += f" readyz={status}" + (f" {failing}" if failing else "")
            parts.append(f"{child.name}={state}")
        return " ".join(parts)

    def logs(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {c.name} (exits {c.exits}) ---\n{c.tail(chars)}" for c in self.children())

    def wait_until(
        self, what: str, check: Callable[[], bool], timeout_s: float, running: Iterable[Child] = ()
    ) -> float:
        """Poll ``check``; fail (with the logs) on timeout or when a child of ``running`` exits."""
        started = last_status = time.monotonic()
        must_run = list(running)
        while True:
            if check():
                return time.monotonic() - started
            if time.monotonic() - last_status > 10:
                last_status = time.monotonic()
                print(
                    f"[faults] {last_status - started:.0f}s waiting for {what}: {self.status()}", flush=True
                )
            for child in must_run:
                if not child.alive:
                    code = child.proc.returncode if child.proc else None
                    raise ChildDied(f"{child.name} exited ({code}) while waiting for {what}\n{self.logs()}")
            if time.monotonic() - started > timeout_s:
                raise AssertionError(
                    f"timed out after {timeout_s}s waiting for {what}\nstatus: {self.status()}\n{self.logs()}"
                )
            time.sleep(1.0)

    # --- observations ---------------------------------------------------------------------
    def ledger(self) -> dict[str, Any]:
        status, body = http_get(f"http://127.0.0.1:{self.api_port}/_ledger?ids=1")
        assert status == 200, f"demo API ledger: HTTP {status}"
        return dict(body)

    def served(self) -> int:
        status, body = http_get(f"http://127.0.0.1:{self.api_port}/_ledger")
        return int(body["count"]) if status == 200 else 0

    def mongo(self) -> Any:
        """The predictions collection, through one client per pipeline (closed by drop_database)."""
        if self._mongo is None:
            url = self.settings.mongo.url.get_secret_value()
            self._mongo = MongoClient(
                url, serverSelectionTimeoutMS=3000, socketTimeoutMS=20000, tz_aware=True, maxPoolSize=4
            )
        return self._mongo[self.database]["predictions"]

    def stored(self) -> int:
        """Documents in the collection (collection stats: cheap to poll); -1 when MongoDB is down."""
        try:
            return int(self.mongo().estimated_document_count())
        except Exception:
            return -1

    def documents(self) -> list[dict[str, Any]]:
        return list(self.mongo().find({}, {"_id": 1, "record_id": 1, "model": 1}))

    def served_records(self) -> list[dict[str, Any]]:
        """Every record the demo API holds, exactly as it serves them (read with ``offset``)."""
        out: list[dict[str, Any]] = []
        while len(out) < self.config.max_records:
            url = f"http://127.0.0.1:{self.api_port}/transactions?offset={len(out)}&limit=5000"
            status, body = http_get(url, timeout_s=30)
            assert status == 200 and body["data"], f"demo API page at {len(out)}: HTTP {status}"
            out += body["data"]
        return out

    def expected(self) -> Expected:
        """Every record the API serves, which of them are invalid, and the documents due.

        Read from the API once it served everything (the records depend on its start time).
        """
        if self._expected is None:
            c = self.config
            ledger, docs, invalid = [], {}, set()
            for record in self.served_records():
                rid = record["id"]
                ledger.append(rid)
                amount, currency = record.get("amount"), record.get("currency")
                if amount is None or (isinstance(amount, int | float) and amount <= 0) or currency == "XXX":
                    invalid.add(rid)
                    continue
                version = (
                    CANDIDATE_VERSION
                    if assign_variant(rid, c.candidate_share) == CANDIDATE
                    else PRIMARY_VERSION
                )
                docs[f"{self.source}:{rid}:{MODEL}:{version}"] = rid
            self._expected = Expected(ledger, docs, invalid)
        return self._expected

    def read_topic(self, topic: str, timeout_s: float = 30.0) -> list[Any]:
        """Every readable (committed) message of ``topic``, read to the end of each partition."""
        consumer = Consumer(reader_config(self.settings, "faults-reader", **{"enable.partition.eof": True}))
        try:
            parts = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
            consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
            pending, out = set(parts), []
            deadline = time.monotonic() + timeout_s
            while pending and time.monotonic() < deadline:
                for msg in consumer.consume(1000, timeout=0.5):
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            pending.discard(msg.partition())
                            continue
                        raise RuntimeError(err.str())
                    out.append(msg)
            assert not pending, f"{topic}: partitions {pending} not read to the end in {timeout_s}s"
            return out
        finally:
            consumer.close()

    def dead_letters(self) -> list[dict[str, Any]]:
        letters = []
        for msg in self.read_topic(dlq_topic(self.source)):
            headers = parse_headers(msg.headers())
            letters.append({"key": msg.key(), "value": msg.value(), **headers})
        return letters

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """Committed offset per partition (-1001 = none)."""
        conf = consumer_config(
            self.settings, group, "faults-offsets", **{"isolation.level": "read_uncommitted"}
        )
        consumer = Consumer(conf)
        try:
            parts = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
            return {
                tp.partition: tp.offset
                for tp in consumer.committed([TopicPartition(topic, p) for p in parts], timeout=10)
            }
        finally:
            consumer.close()

    def waiting(self, group: str, topics: Sequence[str]) -> dict[tuple[str, int], int]:
        """Readable records after the group's committed offset, per (topic, partition) with any."""
        starts: dict[tuple[str, int], int] = {}
        for topic in topics:
            for partition, offset in self.committed(group, topic).items():
                starts[(topic, partition)] = offset if offset >= 0 else OFFSET_BEGINNING
        reader = Consumer(reader_config(self.settings, "faults-lag", **{"enable.partition.eof": True}))
        counts = dict.fromkeys(starts, 0)
        try:
            reader.assign([TopicPartition(t, p, o) for (t, p), o in starts.items()])
            pending = set(starts)
            deadline = time.monotonic() + 20
            while pending and time.monotonic() < deadline:
                for msg in reader.consume(1000, timeout=0.5):
                    key = (msg.topic() or "", msg.partition() or 0)
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            pending.discard(key)
                        continue
                    counts[key] += 1
            assert not pending, f"could not read {sorted(pending)} to the end"
        finally:
            reader.close()
        return {k: n for k, n in counts.items() if n}

    def processor_inputs(self) -> list[str]:
        """The topics the processor's group reads: raw only when fused (the default)."""
        return pipeline_groups(self.settings)[self.processor_group]

    def backlog(self) -> dict[str, dict[tuple[str, int], int]]:
        """Records waiting for the processor and the sink (empty dicts: caught up)."""
        s = self.source
        return {
            "processor": self.waiting(self.processor_group, self.processor_inputs()),
            "sink": self.waiting(self.sink_group, [predictions_topic(s)]),
        }

    # --- the invariant --------------------------------------------------------------------
    def drained(self) -> bool:
        if self.served() < self.config.max_records:
            return False
        if self.stored() < len(self.expected().documents):
            return False
        backlog = self.backlog()
        return not backlog["processor"] and not backlog["sink"]

    def wait_drained(self, timeout_s: float, running: Iterable[Child] | None = None) -> float:
        """Wait until every record was served, stored and committed; returns the seconds waited."""
        return self.wait_until(
            "the pipeline to drain", self.drained, timeout_s, self.children() if running is None else running
        )

    def assert_invariant(self, also_dead: dict[str, str] | None = None) -> dict[str, int]:
        """The ledger invariant (module docstring); ``also_dead``: record key -> stage meant to fail."""
        exp = self.expected()
        ledger = self.ledger()
        assert ledger["count"] == self.config.max_records, ledger["count"]
        assert ledger["ids"] == exp.ledger, "the ledger does not hold every record of the API"

        docs = self.documents()
        ids = [d["_id"] for d in docs]
        by_record: dict[str, int] = {}
        for d in docs:
            by_record[d["record_id"]] = by_record.get(d["record_id"], 0) + 1
        doubled = sorted(r for r, n in by_record.items() if n > 1)
        missing = sorted(set(exp.documents) - set(ids))
        extra = sorted(set(ids) - set(exp.documents))
        assert not doubled, f"{len(doubled)} records stored under more than one model version: {doubled[:5]}"
        assert not missing, f"{len(missing)} of {len(exp.documents)} documents missing: {missing[:5]}"
        assert not extra, f"{len(extra)} unexpected documents: {extra[:5]}"
        assert len(ids) == len(set(ids)) == len(exp.documents)
        for d in docs:
            assert d["model"]["version"] == d["_id"].rsplit(":", 1)[1], d

        letters = self.dead_letters()
        meant = dict.fromkeys(exp.invalid, "validate") | (also_dead or {})
        got: dict[str, list[str]] = {}
        for letter in letters:
            key = (letter["key"] or b"").decode("utf-8", "replace")
            got.setdefault(key, []).append(letter.get("stage", "?"))
        unexpected = {k: v for k, v in got.items() if k not in meant}
        assert not unexpected, f"dead letters nobody meant: {dict(list(unexpected.items())[:5])}"
        absent = sorted(set(meant) - set(got))
        assert not absent, f"records meant to fail but not in the DLQ: {absent[:5]}"
        wrong = {k: v for k, v in got.items() if set(v) != {meant[k]}}
        assert not wrong, f"dead letters at the wrong stage: {dict(list(wrong.items())[:5])}"
        backlog = self.backlog()
        assert backlog == {"processor": {}, "sink": {}}, backlog
        return {
            "served": ledger["count"],
            "documents": len(ids),
            "dead_letters": len(letters),
            "dead_letter_records": len(got),
        }

    def drop_database(self) -> None:
        with contextlib.suppress(Exception):
            self.mongo().database.client.drop_database(self.database)
        if self._mongo is not None:
            self._mongo.close()
            self._mongo = None


def hook_events(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        return []
