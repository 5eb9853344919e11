"""The end-to-end harness: open-loop load, a step search for the sustainable rate, latency at
50 % and 80 % of it, CPU per 1000 records and memory, for streamscore and each peer in turn.

One *pipeline* = the demo API (the load, offered at a fixed rate whatever the pipeline does) →
streamscore's poller (the same for everybody) → the pipeline's own processes → MongoDB. Every
pipeline run gets its own source name (so its own topics, cursor and transactional id), consumer
groups and MongoDB database; all of them are deleted at the end unless ``keep`` is set.

Measurements, every second (:class:`Sampler`): records the API made available, records done
(documents acknowledged by MongoDB + dead letters), so ``lag = available - done``; Kafka
consumer lag per group (admin API); CPU time and RSS of each process (psutil), with the broker,
the database and the registry apart. Per record: fetch → MongoDB acknowledgement as the sink
observes it (``END_TO_END``), fetch → scored (``PROCESSOR_STAGE_LATENCY``), see
:mod:`bench.stamps`.

A rate is *sustainable* when over the second half of its step the lag does not grow (slope
under 5 % of the rate) and stays under 3 s worth of records. The search doubles the rate from
``start_rate`` until a step fails, then bisects ``refine`` times; the pipeline is drained
(rate 0 until lag ≈ 0) before a step that follows a failed one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import structlog

from bench import stamps
from streamscore.settings import REPO_ROOT, Settings, load_settings
from streamscore.topics import clean_topic, dlq_topic, predictions_topic, raw_topic, shadow_topic

log = structlog.get_logger(__name__)
WORK_ROOT = Path(os.environ.get("STREAMSCORE_BENCH_WORK", "/tmp/streamscore-bench"))
STACK_PIDS = REPO_ROOT / ".stack" / "pids"
PERCENTILES = (50, 95, 99)


@dataclass(frozen=True)
class PipelineSpec:
    """What runs after the poller, and which consumer groups it uses."""

    name: str
    roles: tuple[str, ...]
    groups: tuple[str, ...]  # suffixes of the run's group prefix
    short: str = ""  # in source, group and database names
    env: tuple[tuple[str, str], ...] = ()  # settings of this variant


STREAMSCORE_ROLES = ("poller", "processor", "sink")
PIPELINES = {
    "streamscore": PipelineSpec("streamscore", STREAMSCORE_ROLES, ("processor", "sink"), "ss"),
    "streamscore-two-agents": PipelineSpec(
        "streamscore-two-agents",
        STREAMSCORE_ROLES,
        ("processor", "sink"),
        "s2",
        (("STREAMSCORE_PROCESSOR__FUSED", "false"),),
    ),
    "quix": PipelineSpec("quix", ("poller", "quix"), ("processor",), "qx"),
    "faststream": PipelineSpec("faststream", ("poller", "faststream"), ("processor",), "fs"),
    "floor": PipelineSpec("floor", ("poller", "floor"), ("processor",), "fl"),
}


@dataclass
class Options:
    """Knobs of one harness run (see ``python -m bench --help``)."""

    pipelines: list[str]
    start_rate: float = 500.0
    max_rate: float = 20_000.0
    step_s: float = 20.0
    refine: int = 2
    warm_s: float = 5.0
    measure_s: float = 30.0
    fractions: tuple[float, ...] = (0.5, 0.8)
    fixed_rate: float | None = None  # skip the search, take this as the sustainable rate
    soak_s: float = 0.0
    poll_interval_s: float = 0.1
    page_size: int = 1000
    env: dict[str, str] = field(default_factory=dict)  # extra STREAMSCORE_* for every process
    keep: bool = False
    startup_timeout_s: float = 90.0
    profile: bool = False  # an extra window at 80 % with py-spy on every pipeline process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def infra_processes() -> dict[str, psutil.Process]:
    """The shared stack's broker, database and registry (read-only: only measured)."""
    out: dict[str, psutil.Process] = {}
    for name, label in (("kafka", "broker"), ("mongo", "database"), ("registry", "registry")):
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            out[label] = psutil.Process(int((STACK_PIDS / f"{name}.pid").read_text().strip()))
    return out


def http_json(url: str, method: str = "GET", timeout: float = 5.0) -> Any:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


class Run:
    """One pipeline's processes, their settings and their measurements."""

    def __init__(self, spec: PipelineSpec, tag: str, options: Options) -> None:
        self.spec = spec
        self.options = options
        short = spec.short or spec.name[:2]
        self.source = f"b{tag}-{short}"
        self.prefix = f"bench-{tag}-{short}"
        self.database = f"bench_{tag}_{short}"
        self.dir = WORK_ROOT / tag / spec.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.api_port = free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.env = self._env()
        self.settings: Settings = _settings_from(self.env)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ps: dict[str, psutil.Process] = {}

    def _env(self) -> dict[str, str]:
        o = self.options
        source = {
            "name": self.source,
            "url": f"{self.api}/transactions",
            "page_size": o.page_size,
            "poll_interval_s": o.poll_interval_s,
            "rate_limit_per_s": 50,
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")}
        env |= {
            "STREAMSCORE_LOG_LEVEL": "WARNING",
            "STREAMSCORE_LOG_FORMAT": "json",
            "STREAMSCORE_SOURCES": json.dumps([source]),
            "STREAMSCORE_PROCESSOR__APP_ID": f"{self.prefix}-processor",
            "STREAMSCORE_SINK__APP_ID": f"{self.prefix}-sink",
            "STREAMSCORE_MONGO__DATABASE": self.database,
            "STREAMSCORE_HEALTH__POLLER_PORT": "0",
            "STREAMSCORE_HEALTH__PROCESSOR_PORT": "0",
            "STREAMSCORE_HEALTH__SINK_PORT": "0",
            "STREAMSCORE_DEMO_API__BACKLOG": "0",
            "STREAMSCORE_DEMO_API__MAX_PAGE_SIZE": str(max(5000, o.page_size)),
            "STREAMSCORE_KAFKA__CLIENT_ID_PREFIX": self.prefix,
        }
        for name in (
            "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS",
            "STREAMSCORE_REGISTRY__URL",
            "STREAMSCORE_MONGO__URL",
        ):
            if name in os.environ:
                env[name] = os.environ[name]
        return env | dict(self.spec.env) | o.env

    @property
    def groups(self) -> list[str]:
        return [f"{self.prefix}-{g}" for g in self.spec.groups]

    # --- processes --------------------------------------------------------------------------
    def start(self) -> None:
        from streamscore.bootstrap import prepare

        prepare(self.settings, "bench", timeout_s=60)  # topics and contracts before anyone races
        self._spawn("api", ["--port", str(self.api_port)])
        self._wait(lambda: http_json(f"{self.api}/_bench/stats") is not None, "demo API")
        for role in self.spec.roles:
            self._spawn(role)

    def _spawn(self, role: str, extra: list[str] | None = None) -> None:
        cmd = [sys.executable, "-m", "bench.launch", role, "--dir", str(self.dir), *(extra or [])]
        out = open(self.dir / f"{role}.log", "ab")  # noqa: SIM115 (owned by the child)
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.procs[role] = proc
        self.ps[role] = psutil.Process(proc.pid)

    def _wait(self, ok: Any, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(Exception):
                if ok():
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.spec.name}: {what} not ready within {timeout:.0f}s")

    def check_alive(self) -> None:
        for role, proc in self.procs.items():
            code = proc.poll()
            if code is not None:
                tail = (self.dir / f"{role}.log").read_bytes()[-3000:].decode(errors="replace")
                raise RuntimeError(f"{self.spec.name}: {role} exited with {code}:\n{tail}")

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every process we started (by pid), SIGKILL after 20 s; their exit codes."""
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        codes: dict[str, int | None] = {}
        for role, proc in self.procs.items():
            try:
                codes[role] = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                codes[role] = proc.wait()
        return codes

    def set_rate(self, rate: float) -> None:
        http_json(f"{self.api}/_bench/rate?r={rate:.3f}", method="POST")

    def cleanup(self) -> None:
        """Delete this run's topics, consumer groups and MongoDB database (nothing else)."""
        from confluent_kafka.admin import AdminClient
        from pymongo import MongoClient

        from streamscore.kafka_config import admin_config

        s = self.source
        topics = [raw_topic(s), clean_topic(s), predictions_topic(s), shadow_topic(s), dlq_topic(s)]
        admin = AdminClient(admin_config(self.settings))
        for fut in admin.delete_topics(topics, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                fut.result()
        with contextlib.suppress(Exception):
            for fut in admin.delete_consumer_groups(self.groups, request_timeout=30).values():
                with contextlib.suppress(Exception):
                    fut.result()
        client: MongoClient[Any] = MongoClient(self.settings.mongo.url.get_secret_value())
        with contextlib.suppress(Exception):
            client.drop_database(self.database)
        client.close()


def _settings_from(env: dict[str, str]) -> Settings:
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        return load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


class Sampler:
    """Samples the run every ``interval_s`` in a thread: counts, lag, CPU and RSS."""

    def __init__(self, run: Run, interval_s: float = 1.0) -> None:
        from streamscore.lag import LagProbe

        self.run = run
        self.interval_s = interval_s
        self.samples: list[dict[str, Any]] = []
        self.infra = infra_processes()
        self.probe = LagProbe(run.settings, timeout_s=5.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def processes(self) -> dict[str, psutil.Process]:
        return {**self.run.ps, **self.infra}

    def snapshot(self) -> dict[str, Any]:
        """Counts, CPU and RSS now (no Kafka calls: cheap, for window edges)."""
        counters = stamps.read_counters(self.run.dir)
        stats = http_json(f"{self.run.api}/_bench/stats")
        cpu: dict[str, float] = {}
        rss: dict[str, int] = {}
        for name, proc in self.processes().items():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                cpu[name] = times.user + times.system
                rss[name] = proc.memory_info().rss
        dlq = sum(v for k, v in counters.items() if k.startswith("dlq."))
        written = counters.get("written", 0.0)
        return {
            "t": time.time(),
            "rate": stats["rate"],
            "available": stats["available"],
            "fetched": counters.get("fetched", 0.0),
            "produced": counters.get("produced", 0.0),
            "written": written,
            "dlq": dlq,
            "lag": stats["available"] - written - dlq,
            "cpu": cpu,
            "rss": rss,
        }

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                sample = self.snapshot()
                sample["kafka_lag"] = self._kafka_lag()
                self.samples.append(sample)
            except Exception as exc:  # a sample lost is not a reason to stop the run
                log.warning("sample_failed", error=str(exc)[:200])
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def _kafka_lag(self) -> dict[str, int]:
        try:
            rows = self.probe.measure(self.run.groups, with_seconds=False)
        except Exception:
            return {}
        out: dict[str, int] = {}
        for row in rows:
            key = f"{row.group.rsplit('-', 1)[-1]}:{row.topic.split('.', 1)[0]}"
            out[key] = out.get(key, 0) + row.lag_messages
            if row.status != "ok":  # e.g. no-commit: the group never committed this partition
                out[f"{key}:{row.status}"] = out.get(f"{key}:{row.status}", 0) + 1
        return out

    def between(self, t0: float, t1: float) -> list[dict[str, Any]]:
        return [s for s in self.samples if t0 <= s["t"] <= t1]


# --- measurement ------------------------------------------------------------------------------
def lag_verdict(samples: list[dict[str, Any]], rate: float) -> dict[str, Any]:
    """Whether the lag stayed bounded over ``samples`` (the second half of a step)."""
    if len(samples) < 3:
        return {"ok": False, "why": "too few samples"}
    t = np.array([s["t"] for s in samples])
    lag = np.array([s["lag"] for s in samples], dtype=float)
    done = np.array([s["written"] + s["dlq"] for s in samples], dtype=float)
    slope = float(np.polyfit(t - t[0], lag, 1)[0])
    throughput = float((done[-1] - done[0]) / (t[-1] - t[0]))
    bound = 3.0 * rate + 200
    ok = slope <= 0.05 * rate + 5 and lag[-1] <= bound
    last = samples[-1]
    kafka = {k: v for k, v in last.get("kafka_lag", {}).items() if k.count(":") == 1}
    return {
        "ok": bool(ok),
        "api_backlog_end": int(last["available"] - last["fetched"]),  # not yet fetched by the poller
        "kafka_lag_end": kafka,
        "lag_slope_per_s": round(slope, 1),
        "lag_end": int(lag[-1]),
        "lag_bound": int(bound),
        "done_per_s": round(throughput, 1),
    }


def percentiles(values: np.ndarray) -> dict[str, float | int]:
    if len(values) == 0:
        return {"n": 0}
    out: dict[str, float | int] = {"n": len(values)}
    for p in PERCENTILES:
        out[f"p{p}_ms"] = round(float(np.percentile(values, p)) * 1000, 1)
    out["max_ms"] = round(float(values.max()) * 1000, 1)
    return out


def window_stats(
    run: Run, sampler: Sampler, a: dict[str, Any], b: dict[str, Any], idle: dict[str, float] | None = None
) -> dict[str, Any]:
    """Latency, throughput, CPU and memory between two snapshots.

    ``idle`` (CPU-ms/s of each process with no load) gives the marginal CPU per record: the
    window's CPU minus what the processes burn anyway, per 1000 records.
    """
    t0, t1 = a["t"], b["t"]
    e2e = stamps.read_series(run.dir, "e2e")
    scored = stamps.read_series(run.dir, "stage.score")
    in_window = e2e[(e2e[:, 0] >= t0) & (e2e[:, 0] < t1), 1] if len(e2e) else np.empty(0)
    sc = scored[(scored[:, 0] >= t0) & (scored[:, 0] < t1), 1] if len(scored) else np.empty(0)
    arrivals = {}
    for kind in ("raw", "clean", "predictions"):
        series = stamps.read_series(run.dir, f"in.{kind}")
        if len(series):
            arrivals[kind] = percentiles(series[(series[:, 0] >= t0) & (series[:, 0] < t1), 1])
    done = (b["written"] + b["dlq"]) - (a["written"] + a["dlq"])
    seconds = t1 - t0
    cpu: dict[str, dict[str, float]] = {}
    per_k = max(done, 1) / 1000
    for name in b["cpu"]:
        if name in a["cpu"]:
            used = b["cpu"][name] - a["cpu"][name]
            cpu[name] = {"cpu_s": round(used, 3), "cpu_s_per_1000": round(used / per_k, 4)}
    pipeline = list(run.spec.roles)
    pipeline_cpu = sum(cpu[r]["cpu_s"] for r in pipeline if r in cpu)
    fixed = sum((idle or {}).get(r, 0.0) for r in pipeline if r in cpu) * seconds / 1000
    rows = sampler.between(t0, t1)
    rss_peak = {n: max(s["rss"].get(n, 0) for s in rows) for n in b["rss"]} if rows else {}
    return {
        "seconds": round(seconds, 2),
        "offered_per_s": a["rate"],
        "done": int(done),
        "done_per_s": round(done / seconds, 1),
        "latency_fetch_to_mongo_ack": percentiles(in_window),
        "latency_fetch_to_scored": percentiles(sc),
        "latency_kafka_to_agent_in": arrivals,  # record's Kafka timestamp -> a stage took it
        "cpu": cpu,
        "pipeline_cpu_ms_per_1000": round(1000 * pipeline_cpu / per_k, 1),
        "pipeline_marginal_cpu_ms_per_1000": round(1000 * max(0.0, pipeline_cpu - fixed) / per_k, 1),
        "rss_start": a["rss"],
        "rss_end": b["rss"],
        "rss_peak": rss_peak,
        "lag_max": int(max((s["lag"] for s in rows), default=0)),
    }


def stage_latencies(run: Run, t0: float, t1: float, cap: int = 20_000) -> dict[str, Any]:
    """fetch → Kafka record timestamp of each output topic, for records of the window.

    The timestamps are the producers' (CreateTime): ``raw`` = the poller produced the record,
    ``clean`` = the clean step produced its output, ``predictions`` = the score step did. Read
    back after the window (a throwaway reader, no commits), at most ``cap`` records per topic.
    """
    from confluent_kafka import Consumer, TopicPartition

    from streamscore.bootstrap import codec
    from streamscore.kafka_config import reader_config
    from streamscore.registry import SchemaRegistry

    registry = SchemaRegistry(run.settings.registry)
    out: dict[str, Any] = {}
    for topic in (raw_topic(run.source), clean_topic(run.source), predictions_topic(run.source)):
        decoder = codec(registry, run.settings, topic)
        consumer = Consumer(reader_config(run.settings, "bench-stages", **{"enable.partition.eof": True}))
        try:
            parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            wanted = [TopicPartition(topic, p, int(t0 * 1000)) for p in parts]
            starts = [tp for tp in consumer.offsets_for_times(wanted, timeout=10) if tp.offset >= 0]
            consumer.assign(starts)
            values: list[float] = []
            open_parts = {tp.partition for tp in starts}
            deadline = time.monotonic() + 30
            while open_parts and len(values) < cap and time.monotonic() < deadline:
                for msg in consumer.consume(500, timeout=1.0):
                    if msg.error() is not None:
                        open_parts.discard(msg.partition())
                        continue
                    ts = msg.timestamp()[1] / 1000
                    if ts >= t1:
                        open_parts.discard(msg.partition())
                        continue
                    with contextlib.suppress(Exception):
                        fetched = decoder.decode(msg.value())["fetched_at"].timestamp()
                        values.append(ts - fetched)
        finally:
            consumer.close()
        out[topic.split(".", 1)[0]] = percentiles(np.array(values))
    return out


class Session:
    """Drives one pipeline through the search, the latency phases and (optionally) the soak."""

    def __init__(self, run: Run, sampler: Sampler, options: Options) -> None:
        self.run = run
        self.sampler = sampler
        self.o = options
        self.steps: list[dict[str, Any]] = []
        self.phases: list[dict[str, Any]] = []
        self.events: list[tuple[float, str]] = []
        self.idle_rates: dict[str, float] = {}

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.run.check_alive()
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    def wait_flowing(self) -> float:
        """Offer a trickle until the first records reach MongoDB; the start-up time."""
        started = time.time()
        self.run.set_rate(min(100.0, self.o.start_rate))
        deadline = time.monotonic() + self.o.startup_timeout_s
        while time.monotonic() < deadline:
            self.run.check_alive()
            if stamps.read_counters(self.run.dir).get("written", 0) > 0:
                self.sleep(2.0)
                return time.time() - started
            time.sleep(0.5)
        raise RuntimeError(f"{self.run.spec.name}: nothing reached MongoDB in {self.o.startup_timeout_s}s")

    def drain(self, limit_s: float = 120.0) -> bool:
        self.run.set_rate(0)
        self.events.append((time.time(), "drain"))
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            self.run.check_alive()
            s = self.sampler.snapshot()
            if s["lag"] <= 5:
                return True
            time.sleep(0.5)
        return False

    def idle(self, seconds: float) -> dict[str, float]:
        """CPU-ms per second of each process with nothing offered: the fixed cost."""
        self.drain()
        self.events.append((time.time(), "idle"))
        a = self.sampler.snapshot()
        self.sleep(seconds)
        b = self.sampler.snapshot()
        span = b["t"] - a["t"]
        rates = {n: round(1000 * (b["cpu"][n] - a["cpu"][n]) / span, 1) for n in b["cpu"] if n in a["cpu"]}
        self.idle_rates = rates
        return rates

    def step(self, rate: float) -> bool:
        rate = round(rate)
        self.run.set_rate(rate)
        t0 = time.time()
        self.events.append((t0, f"step {rate}/s"))
        self.sleep(self.o.step_s)
        t1 = time.time()
        verdict = lag_verdict(self.sampler.between(t0 + (t1 - t0) / 2, t1), rate)
        verdict |= {"rate": rate, "t0": t0, "t1": t1}
        self.steps.append(verdict)
        log.warning("step", pipeline=self.run.spec.name, **{k: v for k, v in verdict.items() if k[0] != "t"})
        return bool(verdict["ok"])

    def search(self) -> float:
        if self.o.fixed_rate is not None:
            return self.o.fixed_rate
        best: float | None = None
        fail: float | None = None
        rate = self.o.start_rate
        while rate <= self.o.max_rate:
            if self.step(rate):
                best, rate = rate, rate * 2
            else:
                fail = rate
                break
        tries = 0
        while best is None and tries < 3:  # even the start rate is too much: go down
            assert fail is not None
            self.drain()
            rate = fail / 2
            if self.step(rate):
                best = rate
            else:
                fail = rate
            tries += 1
        if best is None:
            return 0.0
        for _ in range(self.o.refine if fail is not None else 0):
            assert fail is not None
            mid = round((best + fail) / 2 / 25) * 25
            if mid in (best, fail):
                break
            self.drain()
            if self.step(mid):
                best = mid
            else:
                fail = mid
        return best

    def phase(self, label: str, rate: float, seconds: float) -> dict[str, Any]:
        self.drain()
        self.run.set_rate(rate)
        self.events.append((time.time(), f"{label} {rate:.0f}/s"))
        self.sleep(self.o.warm_s)
        a = self.sampler.snapshot()
        self.sleep(seconds)
        b = self.sampler.snapshot()
        stats = {"label": label, "rate": rate, **window_stats(self.run, self.sampler, a, b, self.idle_rates)}
        try:
            stats["latency_fetch_to_kafka_timestamp"] = stage_latencies(self.run, a["t"], b["t"])
        except Exception as exc:  # the breakdown is a bonus; the window's figures stand without it
            stats["latency_fetch_to_kafka_timestamp"] = {"error": str(exc)[:300]}
        self.phases.append(stats)
        return stats


def machine_facts() -> dict[str, Any]:
    import platform
    from importlib import metadata

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for pkg in (
        "faust-streaming",
        "quixstreams",
        "faststream",
        "aiokafka",
        "confluent-kafka",
        "onnxruntime",
        "pymongo",
        "fastavro",
        "pydantic",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[pkg] = metadata.version(pkg)
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
    }


@contextlib.contextmanager
def running(run: Run) -> Iterator[Run]:
    try:
        run.start()
        yield run
    finally:
        run.codes = run.stop()  # type: ignore[attr-defined]
        if not run.options.keep:
            with contextlib.suppress(Exception):
                run.cleanup()


PEER_LIBRARIES = {"quix": "quixstreams", "faststream": "faststream"}


def bench_pipeline(spec: PipelineSpec, tag: str, options: Options) -> dict[str, Any]:
    """Search, latency phases and soak of one pipeline; its result document."""
    import importlib.util

    library = PEER_LIBRARIES.get(spec.name)
    if library and importlib.util.find_spec(library) is None:
        return {"pipeline": spec.name, "error": f"{library} is not installed: pip install -e '.[bench]'"}
    run = Run(spec, tag, options)
    started = time.time()
    result: dict[str, Any] = {"pipeline": spec.name, "source": run.source, "groups": run.groups}
    with running(run), Sampler(run) as sampler:
        session = Session(run, sampler, options)
        try:
            result["startup_s"] = round(session.wait_flowing(), 1)
            result["idle_cpu_ms_per_s"] = session.idle(options.warm_s * 2)
            sustainable = session.search()
            result["sustainable_per_s"] = round(sustainable)
            for frac in options.fractions:
                if sustainable > 0:
                    session.phase(f"{int(frac * 100)}%", sustainable * frac, options.measure_s)
            if options.profile and sustainable > 0:
                result["profile"] = profile(session, sustainable * 0.8, options.measure_s)
            if options.soak_s > 0 and sustainable > 0 and spec.name == "streamscore":
                result["soak"] = soak(session, sustainable * 0.5, options.soak_s)
        except Exception as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"[:4000]
            log.error("pipeline_failed", pipeline=spec.name, error=str(exc)[:2000])
        finally:
            result["steps"] = session.steps
            result["phases"] = session.phases
            result["events"] = [(round(t - started, 2), e) for t, e in session.events]
    result["exit_codes"] = getattr(run, "codes", {})
    result["timeline"] = timeline(sampler.samples, started)
    result["rss_peak"] = {
        n: max((s["rss"].get(n, 0) for s in sampler.samples), default=0) for n in run.spec.roles
    }
    result["wall_s"] = round(time.time() - started, 1)
    return result


def profile(session: Session, rate: float, seconds: float, top: int = 25) -> dict[str, Any]:
    """py-spy (100 Hz, non-blocking) on every pipeline process over a window at ``rate``.

    Only samples of the thread holding the GIL count (``--gil``): Python-level CPU, without
    threads parked in ``poll``/``select`` (C code that releases the GIL, onnxruntime included,
    is not seen). Returns per process the sample count and the functions with the most self and
    inclusive time; the raw stacks stay in the run's work folder (``profile-<role>.txt``).
    """
    run = session.run
    session.drain()
    run.set_rate(rate)
    session.events.append((time.time(), f"profile {rate:.0f}/s"))
    session.sleep(session.o.warm_s)
    spies: dict[str, subprocess.Popen[bytes]] = {}
    for role in run.spec.roles:
        out = run.dir / f"profile-{role}.txt"
        cmd = [str(Path(sys.executable).with_name("py-spy")), "record", "-p", str(run.procs[role].pid)]
        cmd += ["-d", str(int(seconds)), "-r", "100", "-f", "raw", "-o", str(out), "--nonblocking", "--gil"]
        spies[role] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for proc in spies.values():
        try:
            proc.wait(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {role: summarise_stacks(run.dir / f"profile-{role}.txt", top) for role in spies}


def summarise_stacks(path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive shares (% of samples) per function from py-spy's raw output."""
    if not path.exists():
        return {"samples": 0}
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            incl[frame] = incl.get(frame, 0) + count

    def rank(table: dict[str, int]) -> list[tuple[str, float]]:
        best = sorted(table.items(), key=lambda kv: -kv[1])[:top]
        return [(name, round(100 * c / max(total, 1), 1)) for name, c in best]

    return {"samples": total, "self_pct": rank(own), "inclusive_pct": rank(incl)}


def _frame(frame: str) -> str:
    """``func (path/to/module.py:12)`` → ``module.py:func`` (site-packages paths shortened)."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0]
    marker = "site-packages/"
    if marker in file:
        file = file.split(marker, 1)[1]
    elif str(REPO_ROOT) in file:
        file = file.split(str(REPO_ROOT) + "/", 1)[1]
    return f"{file}:{name}"


def soak(session: Session, rate: float, seconds: float) -> dict[str, Any]:
    """Fixed rate for ``seconds``; RSS growth from the end of the first minute to the end."""
    stats = session.phase("soak", rate, seconds)
    rows = session.sampler.between(time.time() - seconds - 1, time.time())
    first = (
        next((s for s in rows if s["t"] >= rows[0]["t"] + min(60.0, seconds / 5)), rows[0]) if rows else None
    )
    growth = {}
    if first and rows:
        for name in session.run.spec.roles:
            a, b = first["rss"].get(name), rows[-1]["rss"].get(name)
            if a and b:
                growth[name] = round(100 * (b - a) / a, 2)
    stats["rss_growth_pct"] = growth
    return stats


def timeline(samples: list[dict[str, Any]], started: float) -> dict[str, list[Any]]:
    """Per-second series for the plots and the JSON (time relative to the pipeline's start)."""
    keys = sorted({k for s in samples for k in s.get("kafka_lag", {})})
    return {
        "t": [round(s["t"] - started, 2) for s in samples],
        "rate": [s["rate"] for s in samples],
        "available": [s["available"] for s in samples],
        "done": [s["written"] + s["dlq"] for s in samples],
        "lag": [s["lag"] for s in samples],
        **{f"kafka_lag.{k}": [s.get("kafka_lag", {}).get(k) for s in samples] for k in keys},
        **{
            f"rss_mb.{n}": [round(s["rss"].get(n, 0) / 2**20, 1) for s in samples]
            for n in (samples[-1]["rss"] if samples else {})
        },
    }


def new_tag() -> str:
    return uuid.uuid4().hex[:6]
