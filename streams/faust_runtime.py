"""What both Faust apps (processor, sink) share: app construction, the health server, the
transient-retry loop that turns an outage into backpressure, and running a worker.

The batch pattern every agent follows (see DESIGN.md section 2):

    async for events in stream.take_events(n, within=s):   # Faust acks a batch only after
        outputs = handle(events)                             # the loop body returned, so
        await retry_transient(lambda: publish(outputs))      # offsets commit after the output
                                                             # is durable, never before.
Per-record failures are caught inside ``handle`` and become dead letters; nothing raises out of
an agent (Faust would ack and skip the message).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import faust
import structlog

from streamscore import metrics
from streamscore.errors import TransientError
from streamscore.health import HealthServer
from streamscore.kafka_config import faust_app_config
from streamscore.settings import Settings

log = structlog.get_logger(__name__)
T = TypeVar("T")


def _gap_without_the_message() -> None:
    """Fix Faust's record of an offset gap (transaction markers, compaction) to exclude the message.

    faust-streaming 0.11 records the gap before a message at ``offset`` as ``[last read + 1,
    offset]``, the message included. The gap is later merged into the acked offsets, so (1) that
    message's offset is counted as acked before it is processed (faust-streaming issue 606: with
    concurrency > 1 a commit passes it), and (2) once it is acked it is in the list twice, which
    splits the run ``_new_offset`` commits: each commit then advances past one transaction only,
    and on ``raw.<source>`` (a transaction per poller page) the committed offsets fell ever
    further behind (found by tests/faults/test_commit_boundary.py).
    """
    from faust.transport.consumer import Consumer

    add_gap = Consumer._add_gap
    if getattr(add_gap, "_streamscore_fixed", False):
        return

    async def _add_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
        await add_gap(self, tp, offset_from, offset_to - 1)

    _add_gap._streamscore_fixed = True  # type: ignore[attr-defined]
    Consumer._add_gap = _add_gap  # type: ignore[method-assign]


def _read_committed() -> None:
    """Make Faust's consumer read only committed records (``isolation.level=read_committed``).

    faust-streaming asks aiokafka for ``read_uncommitted`` unless the app runs Faust's own
    exactly-once mode (which would also move commits into Faust's producer transactions). The
    poller writes ``raw.<source>`` in transactions, and a page whose transaction was aborted (a
    poller killed mid-page) is published again from the committed cursor; reading uncommitted,
    the processor processed the aborted copy too. aiokafka passes the level to its fetcher when
    the consumer starts, so it is set on the consumer Faust created, before it starts.
    """
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    create = AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "_streamscore_fixed", False):
        return

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._isolation_level = "read_committed"
        return consumer

    _create_worker_consumer._streamscore_fixed = True  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]


_gap_without_the_message()
_read_committed()


def create_app(settings: Settings, app_id: str, component: str, port: int, **extra: Any) -> faust.App:
    """A Faust app with our broker config and a health server started with it."""
    conf = faust_app_config(settings, app_id) | extra
    app = faust.App(**conf)
    health = HealthServer(component, settings.health.host, port)
    app.health = health  # type: ignore[attr-defined]

    @app.task(on_leader=False)
    async def _start_health() -> None:
        await health.start()

    return app


async def retry_transient(
    fn: Callable[[], Awaitable[T]],
    component: str,
    what: str,
    on_failing: Callable[[bool], None] | None = None,
    initial: float = 0.2,
    cap: float = 10.0,
) -> T:
    """Await ``fn`` until it succeeds; on TransientError back off (full jitter) and retry forever.

    While it fails, the caller's batch is not acked, so nothing is committed (backpressure).
    ``on_failing(True/False)`` lets the caller flip readiness.
    """
    attempt = 0
    while True:
        try:
            result = await fn()
        except TransientError as exc:
            attempt += 1
            if on_failing:
                on_failing(True)
            metrics.TRANSIENT_ERRORS.labels(component=component, kind=what).inc()
            delay = random.uniform(0, min(cap, initial * 2**attempt))
            log.warning(
                "transient_failure",
                component=component,
                what=what,
                attempt=attempt,
                error=str(exc)[:300],
                retry_in_s=round(delay, 3),
            )
            await asyncio.sleep(delay)
            continue
        if on_failing and attempt:
            on_failing(False)
        return result


def run_worker(app: faust.App, loglevel: str = "WARNING") -> None:
    """Run a Faust worker in the foreground; SIGTERM/SIGINT stop it gracefully."""
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
