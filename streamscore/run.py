"""``streamscore run``: the whole pipeline as supervised child processes, with a live view.

Prepares topics and contracts, then starts the demo API (when a source points at it; see
:func:`wants_demo_api`), the sink, the processor and the poller (:mod:`streamscore.supervisor`),
and shows fetched / cleaned / scored / stored counts, rates, lag and dead letters
(:mod:`streamscore.pipeline_probe`) — a rich table on a terminal, a plain line every few seconds
otherwise. It stops on Ctrl-C or SIGTERM, after ``--duration`` seconds, or once ``--records``
documents were stored in MongoDB during this run (``stored_at`` since the start).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from rich.console import Console
from rich.live import Live

from streamscore.bootstrap import prepare
from streamscore.errors import TransientError
from streamscore.pipeline_probe import PipelineProbe, Snapshot
from streamscore.run_view import line, table
from streamscore.settings import REPO_ROOT, Settings
from streamscore.supervisor import Supervisor

LOCALHOST = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


@dataclass
class RunOptions:
    records: int | None = None
    duration_s: float | None = None
    demo_api: bool | None = None  # None: start it when a source points at it
    plain: bool | None = None  # None: plain unless stdout is a terminal
    every_s: float = 5.0
    grace_s: float = 30.0
    log_dir: Path = REPO_ROOT / ".stack" / "logs" / "run"


def wants_demo_api(settings: Settings) -> bool:
    """True when a configured source's URL is the bundled demo API's host and port."""
    demo = settings.demo_api
    for source in settings.sources:
        url = urlsplit(source.url)
        same_host = url.hostname == demo.host or {url.hostname, demo.host} <= LOCALHOST
        if same_host and (url.port or (443 if url.scheme == "https" else 80)) == demo.port:
            return True
    return False


def commands(settings: Settings, demo_api: bool | None) -> list[str]:
    start_demo = wants_demo_api(settings) if demo_api is None else demo_api
    return [*(["demo-api"] if start_demo else []), "sink", "process", "poll"]


class Runner:
    def __init__(self, settings: Settings, opts: RunOptions) -> None:
        self.settings = settings
        self.opts = opts
        self.plain = (not sys.stdout.isatty()) if opts.plain is None else opts.plain
        self.console = Console(highlight=False)
        self.live: Live | None = None
        self.started = datetime.now(UTC)
        self.stop_requested = asyncio.Event()
        self.sup = Supervisor(commands(settings, opts.demo_api), opts.log_dir, self.say)

    def say(self, message: str) -> None:
        if self.live is not None:
            self.live.console.print(message)
        else:
            print(message, flush=True)

    def _target(self) -> str:
        parts = []
        if self.opts.records:
            parts.append(f"until {self.opts.records:,} stored")
        if self.opts.duration_s:
            parts.append(f"for {self.opts.duration_s:,.0f}s")
        return f" ({', '.join(parts)})" if parts else " (Ctrl-C stops)"

    async def _done(self, probe: PipelineProbe, snap: Snapshot, elapsed: float) -> str | None:
        if self.stop_requested.is_set():
            return "stop requested"
        if self.sup.config_error:
            return "configuration error"
        if self.opts.duration_s is not None and elapsed >= self.opts.duration_s:
            return f"--duration {self.opts.duration_s:g}s reached"
        records = self.opts.records
        if records is not None and snap.counts["stored"] >= records:
            stored = await probe.stored_this_run()  # the writes counted, now the documents
            if stored is not None and stored >= records:
                return f"{stored:,} records stored (--records {records:,})"
        return None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop_requested.set)
        self.say(f"preparing topics and schemas ({self.settings.kafka.bootstrap_servers})")
        try:
            await asyncio.to_thread(prepare, self.settings, "run", 120.0)
        except TransientError as exc:
            self.say(f"cannot prepare the pipeline: {exc}")
            return 1
        await self.sup.start()
        names = ", ".join(c.name for c in self.sup.children)
        self.say(f"started {names}; logs in {self.opts.log_dir}")
        probe = PipelineProbe(self.settings, self.started)
        t0 = time.monotonic()
        last_line = 0.0
        reason = None
        if not self.plain:
            self.live = Live(console=self.console, refresh_per_second=2, transient=False)
            self.live.start()
        try:
            while reason is None:
                await self.sup.watch()
                snap = await probe.snapshot()
                elapsed = time.monotonic() - t0
                if self.live is not None:
                    self.live.update(table(snap, self.sup, elapsed, self._target()))
                elif elapsed - last_line >= self.opts.every_s:
                    last_line = elapsed
                    self.say(line(snap, self.sup, elapsed))
                reason = await self._done(probe, snap, elapsed)
                if reason is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop_requested.wait(), timeout=1.0)
            if self.plain:
                self.say(line(snap, self.sup, time.monotonic() - t0))
        finally:
            if self.live is not None:
                self.live.stop()
                self.live = None
            self.say(f"stopping ({reason or 'error'}): SIGTERM to the children, {self.opts.grace_s:g}s grace")
            outcome = await self.sup.stop(self.opts.grace_s)
            self.say("stopped: " + ", ".join(f"{k} {v}" for k, v in outcome.items()))
            stored = await probe.stored_this_run()
            self.say(f"documents stored during this run: {stored if stored is not None else '?'}")
            await probe.close()
        return 2 if self.sup.config_error else 0


def main(settings: Settings, opts: RunOptions) -> int:
    return asyncio.run(Runner(settings, opts).run())
