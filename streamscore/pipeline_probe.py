"""What ``streamscore run`` shows: counts and rates per stage, lag, DLQ, readiness, latency.

Counts come from the children's ``/metrics`` (fetched, cleaned, scored, stored, dead letters),
summed across restarts (a counter that goes down means its process restarted). The number of
documents comes from MongoDB, consumer lag from Kafka (:class:`streamscore.lag.LagProbe`, in a
thread, at most every ``lag_every_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pymongo import AsyncMongoClient

from streamscore.lag import LagProbe, pipeline_groups
from streamscore.settings import Settings

RATE_WINDOW_S = 10.0
STAGES = ("fetched", "cleaned", "scored", "stored")

# stage → (component, sample name, required labels)
SAMPLES: dict[str, tuple[str, str, dict[str, str]]] = {
    "fetched": ("poller", "streamscore_poller_records_fetched_total", {}),
    "cleaned": ("processor", "streamscore_processor_records_out_total", {"agent": "clean"}),
    "scored": ("processor", "streamscore_processor_records_out_total", {"agent": "score"}),
    "stored": ("sink", "streamscore_sink_documents_written_total", {}),
}
DLQ_SAMPLE = "streamscore_dlq_records_total"
E2E_BUCKET = "streamscore_pipeline_end_to_end_latency_seconds_bucket"


@dataclass
class Snapshot:
    at: float
    counts: dict[str, float]
    rates: dict[str, float]
    dlq: dict[str, float]
    documents: int | None
    stored_this_run: int | None
    lag: dict[str, int]
    ready: dict[str, bool | None]
    e2e_p50_s: float | None = None
    e2e_p99_s: float | None = None


class Accumulator:
    """Sums a counter across process restarts (Prometheus ``increase`` semantics)."""

    def __init__(self) -> None:
        self.base: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def update(self, key: str, value: float) -> float:
        last = self.last.get(key)
        if last is not None and value < last:
            self.base[key] = self.base.get(key, 0.0) + last
        self.last[key] = value
        return self.base.get(key, 0.0) + value


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """``histogram_quantile`` over cumulative (upper bound, count) buckets, linear within one."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            width = count - prev_count
            return prev_bound + (bound - prev_bound) * ((rank - prev_count) / width if width else 0)
        prev_bound, prev_count = bound, count
    return prev_bound


def samples(text: str) -> Iterable[tuple[str, dict[str, str], float]]:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            yield s.name, s.labels, s.value


@dataclass
class PipelineProbe:
    settings: Settings
    since: datetime
    lag_every_s: float = 5.0
    acc: Accumulator = field(default_factory=Accumulator)
    totals: dict[tuple[str, str], float] = field(default_factory=dict)
    history: deque[tuple[float, dict[str, float]]] = field(default_factory=lambda: deque(maxlen=200))
    _lag: dict[str, int] = field(default_factory=dict)
    _lag_at: float = 0.0
    _lag_task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        h = self.settings.health
        self.ports = {"poller": h.poller_port, "processor": h.processor_port, "sink": h.sink_port}
        self.http = httpx.AsyncClient(timeout=1.0)
        mongo = self.settings.mongo
        self.mongo: AsyncMongoClient[Any] = AsyncMongoClient(
            mongo.url.get_secret_value(), serverSelectionTimeoutMS=1500, connectTimeoutMS=1500
        )
        self.collection = self.mongo[mongo.database][mongo.collection]
        self.lag_probe = LagProbe(self.settings, timeout_s=5.0)

    async def _get(self, component: str, path: str) -> tuple[int, str]:
        url = f"http://{self.settings.health.host}:{self.ports[component]}{path}"
        try:
            resp = await self.http.get(url)
        except httpx.HTTPError:
            return 0, ""
        return resp.status_code, resp.text

    async def _component(self, name: str) -> tuple[str, bool | None, str]:
        (ready, _), (status, text) = await asyncio.gather(
            self._get(name, "/readyz"), self._get(name, "/metrics")
        )
        return name, (ready == 200) if ready else None, text if status == 200 else ""

    def _refresh_lag(self) -> None:
        rows = self.lag_probe.measure(list(pipeline_groups(self.settings)), with_seconds=False)
        lag: dict[str, int] = {}
        for row in rows:
            lag[row.group] = lag.get(row.group, 0) + row.lag_messages
        self._lag = lag

    async def _lag_loop_once(self) -> None:
        with contextlib.suppress(Exception):  # the view outlives the broker; the old figure stays
            await asyncio.to_thread(self._refresh_lag)

    async def stored_this_run(self) -> int | None:
        """Documents written (or rewritten) since the run started, counted in MongoDB."""
        try:
            return int(await self.collection.count_documents({"stored_at": {"$gte": self.since}}))
        except Exception:
            return None

    async def snapshot(self, exact_stored: bool = False) -> Snapshot:
        now = time.monotonic()
        if (self._lag_task is None or self._lag_task.done()) and now - self._lag_at >= self.lag_every_s:
            self._lag_at = now
            self._lag_task = asyncio.create_task(self._lag_loop_once())
        results = await asyncio.gather(*(self._component(n) for n in self.ports))
        ready: dict[str, bool | None] = {}
        buckets: dict[float, float] = {}
        for component, is_ready, text in results:
            ready[component] = is_ready
            for name, labels, value in samples(text):
                key = f"{component}|{name}|{sorted(labels.items())}"
                for stage, (comp, sample, want) in SAMPLES.items():
                    if comp == component and name == sample and want.items() <= labels.items():
                        self.totals[(stage, key)] = self.acc.update(key, value)
                if name == DLQ_SAMPLE:
                    self.totals[(f"dlq:{labels.get('stage', '?')}", key)] = self.acc.update(key, value)
                if name == E2E_BUCKET and component == "sink":
                    bound = float(labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + value
        # totals of every series ever seen: a restarted process has no sample until it counts again
        counts = dict.fromkeys(STAGES, 0.0)
        dlq: dict[str, float] = {}
        for (what, _), total in self.totals.items():
            if what.startswith("dlq:"):
                dlq[what[4:]] = dlq.get(what[4:], 0.0) + total
            else:
                counts[what] += total
        documents = None
        with contextlib.suppress(Exception):
            documents = int(await self.collection.estimated_document_count())
        self.history.append((now, counts))
        rates = self._rates(now, counts)
        pairs = list(buckets.items())
        return Snapshot(
            at=now,
            counts=counts,
            rates=rates,
            dlq=dlq,
            documents=documents,
            stored_this_run=await self.stored_this_run() if exact_stored else None,
            lag=dict(self._lag),
            ready=ready,
            e2e_p50_s=quantile(pairs, 0.5),
            e2e_p99_s=quantile(pairs, 0.99),
        )

    def _rates(self, now: float, counts: dict[str, float]) -> dict[str, float]:
        old = next(((t, c) for t, c in self.history if now - t <= RATE_WINDOW_S), None)
        if old is None or now - old[0] <= 0:
            return dict.fromkeys(counts, 0.0)
        return {k: max(0.0, (counts[k] - old[1].get(k, 0.0)) / (now - old[0])) for k in counts}

    async def close(self) -> None:
        await self.http.aclose()
        await self.mongo.close()
        await asyncio.to_thread(self.lag_probe.close)
