"""The small HTTP server every process runs: ``/metrics``, ``/healthz`` and ``/readyz``.

``/healthz`` answers 200 while the event loop runs (liveness). ``/readyz`` runs the registered
checks and answers 200 only when all pass, else 503 with the failing reasons as JSON. A
:class:`ProgressWatch` turns "no progress for longer than ``stall_after_s`` while work is waiting"
into a failing check, so a stalled consumer is reported not ready.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streamscore import metrics

CheckResult = bool | tuple[bool, str]
Check = Callable[[], CheckResult | Awaitable[CheckResult]]


@dataclass
class ProgressWatch:
    """Tracks the last time a stage made progress (committed, wrote, produced)."""

    component: str
    stall_after_s: float
    backlog: Callable[[], bool] = lambda: False
    last_progress: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        # exported from the start: a stage that stalls before its first commit must still show
        # an (ageing) last-commit time, or the stalled-consumer alert has no series to fire on
        metrics.LAST_COMMIT.labels(component=self.component).set(self.last_progress)

    def progress(self) -> None:
        self.last_progress = time.time()
        metrics.LAST_COMMIT.labels(component=self.component).set(self.last_progress)

    def check(self) -> tuple[bool, str]:
        idle = time.time() - self.last_progress
        if idle > self.stall_after_s and self.backlog():
            return False, f"stalled: no progress for {idle:.0f}s while records are waiting"
        return True, "ok"


class HealthServer:
    def __init__(self, component: str, host: str, port: int) -> None:
        self.component = component
        self.host = host
        self.port = port
        self._checks: dict[str, Check] = {}
        self._runner: web.AppRunner | None = None

    def add_check(self, name: str, check: Check) -> None:
        self._checks[name] = check

    async def run_checks(self) -> dict[str, tuple[bool, str]]:
        results: dict[str, tuple[bool, str]] = {}
        for name, check in self._checks.items():
            try:
                value = check()
                if inspect.isawaitable(value):
                    value = await asyncio.wait_for(value, timeout=3.0)
                ok, why = value if isinstance(value, tuple) else (bool(value), "")
            except Exception as exc:
                ok, why = False, f"{type(exc).__name__}: {exc}"
            results[name] = (ok, why)
        return results

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "alive", "component": self.component})

    async def _readyz(self, _: web.Request) -> web.Response:
        results = await self.run_checks()
        ready = all(ok for ok, _ in results.values())
        metrics.READY.labels(component=self.component).set(1 if ready else 0)
        body = {
            "ready": ready,
            "component": self.component,
            "checks": {n: {"ok": ok, "detail": why} for n, (ok, why) in results.items()},
        }
        return web.json_response(body, status=200 if ready else 503)

    async def start(self) -> None:
        from streamscore import __version__

        metrics.BUILD.info({"version": __version__, "component": self.component})
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
