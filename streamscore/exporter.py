"""``streamscore exporter``: consumer lag of every pipeline group as Prometheus gauges.

One small process, not code inside each app, because lag is the broker's view of a group: it must
be reported when the group's processes are down, stuck or restarting (exactly when it matters),
once per partition rather than once per replica, and without adding admin traffic to every worker.
It serves ``/metrics``, ``/healthz`` and ``/readyz`` (ready = the last measurement is recent).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Sequence

import structlog

from streamscore import metrics
from streamscore.errors import TransientError
from streamscore.health import HealthServer
from streamscore.lag import LagProbe, PartitionLag
from streamscore.settings import Settings

log = structlog.get_logger(__name__)
Labels = tuple[str, str, str]


class LagGauges:
    """Keeps the lag gauges equal to the last measurement; drops series that disappeared."""

    def __init__(self) -> None:
        self._seen: set[Labels] = set()

    def update(self, rows: Sequence[PartitionLag]) -> None:
        now: set[Labels] = set()
        for r in rows:
            labels = (r.group, r.topic, str(r.partition))
            now.add(labels)
            metrics.CONSUMER_LAG_MESSAGES.labels(*labels).set(r.lag_messages)
            if r.lag_seconds is not None:  # unreadable this round: keep the previous value
                metrics.CONSUMER_LAG_SECONDS.labels(*labels).set(r.lag_seconds)
        for labels in self._seen - now:
            for gauge in (metrics.CONSUMER_LAG_MESSAGES, metrics.CONSUMER_LAG_SECONDS):
                with contextlib.suppress(KeyError):
                    gauge.remove(*labels)
        self._seen = now


class LagExporter:
    def __init__(self, settings: Settings, groups: Sequence[str], interval_s: float = 15.0) -> None:
        self.settings = settings
        self.groups = list(groups)
        self.interval_s = interval_s
        self.probe = LagProbe(settings)
        self.gauges = LagGauges()
        self.last_success = 0.0

    def collect(self) -> list[PartitionLag]:
        started = time.monotonic()
        rows = self.probe.measure(self.groups)
        self.gauges.update(rows)
        self.last_success = time.time()
        metrics.LAG_COLLECT_SECONDS.set(time.monotonic() - started)
        metrics.LAG_LAST_SUCCESS.set(self.last_success)
        return rows

    def fresh(self) -> tuple[bool, str]:
        """Readiness: a measurement succeeded within three intervals."""
        age = time.time() - self.last_success
        if age > 3 * self.interval_s + 10:
            return False, "no lag measurement yet" if not self.last_success else f"last one {age:.0f}s ago"
        return True, "ok"

    async def run(self, duration_s: float | None = None) -> None:
        health = HealthServer("exporter", self.settings.health.host, self.settings.health.exporter_port)
        health.add_check("lag_measured", self.fresh)
        await health.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if duration_s is not None:
            loop.call_later(duration_s, stop.set)
        log.info("exporter_started", groups=self.groups, port=self.settings.health.exporter_port)
        try:
            while not stop.is_set():
                try:
                    rows = await asyncio.to_thread(self.collect)
                    total = sum(r.lag_messages for r in rows)
                    log.debug("lag_measured", partitions=len(rows), lag_messages=total)
                except TransientError as exc:
                    metrics.LAG_COLLECT_ERRORS.inc()
                    log.warning("lag_measure_failed", error=str(exc)[:300])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
        finally:
            self.probe.close()
            await health.stop()
            log.info("exporter_stopped")
