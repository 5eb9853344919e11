"""The processor Faust app (``streamscore process``, app id ``streamscore-processor``).

Per configured source, by default one agent ``clean-score-<source>`` (concurrency 1) reads
``raw.<source>``, cleans each batch (:class:`streams.handlers.CleanHandler`, written to
``clean.<source>``) and scores the clean records of the same batch
(:class:`streams.handlers.ScoreHandler`, written to ``predictions.<source>`` and
``predictions-shadow.<source>``). With ``processor.fused = false`` the two stages are two agents
joined by ``clean.<source>`` (``clean-<source>``, ``score-<source>``); ``processor.stages`` picks
the stages of this process, so each can run in its own (docs/processor.md says when to).

Each agent reads micro-batches (:func:`streams.batch_stream.batches`); a batch is acked only
after the loop body returned, and the body returns only after Kafka acknowledged every output
and dead letter of the batch (``DeliveryBatch.wait`` inside ``retry_transient``), so offsets
are committed after the outputs are durable. A batch that fails for any reason other than its
own records (Kafka, registry, a bug) is retried with backoff, never skipped; readiness reports
it. If the worker is stopped while a batch is not yet delivered, the batch's messages are
withheld from Faust's commit so they are read again after the restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import faust
import structlog
from faust.sensors import Monitor
from faust.types import Message

from streams.batch_stream import batches, withhold
from streams.faust_runtime import create_app, retry_transient, run_worker
from streams.handlers import BatchResult, CleanHandler, Emit, Incoming, ScoreHandler
from streams.scoring import ModelSet
from streamscore.bootstrap import codec, prepare
from streamscore.errors import TransientError
from streamscore.health import ProgressWatch
from streamscore.kafka_config import producer_config
from streamscore.producer import AsyncProducer
from streamscore.settings import Settings
from streamscore.topics import clean_topic, predictions_topic, raw_topic

log = structlog.get_logger(__name__)
COMPONENT = "processor"
Handle = Callable[[Sequence[Incoming], Emit], Awaitable[list[BatchResult]]]


class BatchFailed(TransientError):
    """An unexpected error outside any single record: retried like an outage, never skipped."""


def incoming(msg: Message) -> Incoming:
    raw = msg.headers or ()
    pairs = raw.items() if isinstance(raw, Mapping) else raw
    headers = [(str(k), v if isinstance(v, bytes) else str(v).encode()) for k, v in pairs]
    return Incoming(msg.topic, msg.partition, msg.offset, msg.key, msg.value, headers)


def _succeeded(task: asyncio.Future[Any]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


class QuietMonitor(Monitor):
    """Faust's statistics sensor without its per-message hooks (we keep our own metrics)."""

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> dict | None:  # type: ignore[type-arg]
        return None

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None


class Processor:
    """Wires handlers, the producer and health into one Faust app."""

    def __init__(self, settings: Settings, models: ModelSet) -> None:
        self.settings = settings
        self.models = models
        self.failing: set[str] = set()
        self.in_flight: dict[str, float] = {}  # agent -> when its current batch started
        self.producer: AsyncProducer | None = None
        p = settings.processor
        biggest = max(p.clean_batch_size, p.score_batch_size)
        datadir = Path(tempfile.gettempdir()) / "streamscore-faust" / p.app_id  # unused: no tables
        datadir.parent.mkdir(parents=True, exist_ok=True)
        self.app = create_app(
            settings,
            p.app_id,
            COMPONENT,
            settings.health.processor_port,
            stream_buffer_maxsize=8 * biggest,
            broker_max_poll_records=biggest,
            Monitor=QuietMonitor,
            broker_session_timeout=p.session_timeout_s,
            broker_heartbeat_interval=min(3.0, p.session_timeout_s / 3),
            # on stop Faust would otherwise wait for every in-flight message *before* it cancels
            # the agents, so a held batch kept SIGTERM from ever reaching guarded_batch's grace
            stream_wait_empty=False,
            datadir=str(datadir),
        )
        stall = settings.health.stall_after_s
        self.watch = ProgressWatch(COMPONENT, stall, backlog=lambda: bool(self.failing))
        health = self.app.health  # type: ignore[attr-defined]
        health.add_check("progress", self.watch.check)
        health.add_check("outputs", self._outputs_check)
        health.add_check("batches", self._batches_check)
        health.add_check("models", lambda: (True, str(models.describe())))

        @self.app.task(on_leader=False)
        async def _start_producer() -> None:
            self.get_producer()

    def get_producer(self) -> AsyncProducer:
        if self.producer is None:
            # each batch waits for its acks right after producing: lingering only adds latency
            overrides: dict[str, Any] = {"linger.ms": 2}
            conf = producer_config(self.settings, COMPONENT, **overrides)
            self.producer = AsyncProducer(conf)
        return self.producer

    def _outputs_check(self) -> tuple[bool, str]:
        if self.failing:
            return False, f"retrying batches of {sorted(self.failing)}"
        return True, "ok"

    def _batches_check(self) -> tuple[bool, str]:
        """A batch in flight for longer than stall_after_s: the agent is stalled (found by
        tests/faults/test_stalled_agent.py; ``progress`` alone missed it, as nothing was failing)."""
        now = time.monotonic()
        limit = self.settings.health.stall_after_s
        stuck = sorted((name, now - t) for name, t in self.in_flight.items() if now - t > limit)
        if stuck:
            return False, "stalled: " + ", ".join(f"{n} has a batch in flight for {s:.0f}s" for n, s in stuck)
        return True, "ok"

    def add_source(self, source: str, registry: Any) -> None:
        s = self.settings
        clean = CleanHandler(
            source, codec(registry, s, raw_topic(source)), codec(registry, s, clean_topic(source))
        )
        score = ScoreHandler(
            source,
            codec(registry, s, clean_topic(source)),
            codec(registry, s, predictions_topic(source)),
            self.models,
        )

        async def handle_clean(batch: Sequence[Incoming], emit: Emit) -> list[BatchResult]:
            return [clean.handle(batch, emit)]

        async def handle_score(batch: Sequence[Incoming], emit: Emit) -> list[BatchResult]:
            return [await score.handle(batch, emit)]

        async def handle_fused(batch: Sequence[Incoming], emit: Emit) -> list[BatchResult]:
            cleaned: list[tuple[Incoming, dict[str, Any]]] = []
            return [clean.handle(batch, emit, keep=cleaned), await score.score(cleaned, emit)]

        p = s.processor
        if p.runs_fused:
            self._agent(f"clean-score-{source}", raw_topic(source), handle_fused, p.clean_batch_size)
            return
        if "clean" in p.stages:
            self._agent(f"clean-{source}", raw_topic(source), handle_clean, p.clean_batch_size)
        if "score" in p.stages:
            self._agent(f"score-{source}", clean_topic(source), handle_score, p.score_batch_size)

    def _agent(self, name: str, topic: str, handle: Handle, size: int) -> None:
        within = self.settings.processor.batch_within_s
        channel = self.app.topic(topic, key_serializer="raw", value_serializer="raw")

        async def agent(stream: faust.StreamT) -> None:
            async for messages in batches(stream, size, within):
                await self.guarded_batch(name, messages, handle)

        agent.__name__ = name.replace("-", "_")
        self.app.agent(channel, name=name, concurrency=1)(agent)

    async def guarded_batch(self, name: str, messages: Sequence[Message], handle: Handle) -> None:
        """Run a batch; if it cannot finish, withhold its offsets so it is read again.

        Stopping (cancellation) gives the batch ``shutdown_grace_s`` to be delivered first. Any
        other escape is unexpected (run_batch retries everything): the worker crashes, because a
        running Faust worker never re-reads withheld messages and would not commit past them.
        """
        task = asyncio.ensure_future(self.run_batch(name, messages, handle))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({task}, timeout=self.settings.processor.shutdown_grace_s)
            if not _succeeded(task):
                task.cancel()
                withhold(messages)
                log.warning("batch_withheld_on_stop", agent=name, records=len(messages))
            raise
        except Exception as exc:
            withhold(messages)
            log.exception("batch_withheld_crashing", agent=name, records=len(messages))
            await self.app.crash(exc)
            raise

    async def run_batch(self, name: str, messages: Sequence[Message], handle: Handle) -> list[BatchResult]:
        """Handle and deliver one batch, retrying (never skipping) until Kafka acknowledged it."""
        batch = [incoming(m) for m in messages]
        producer = self.get_producer()

        async def attempt() -> list[BatchResult]:
            delivery = producer.batch()

            def emit(topic: str, key: bytes | None, value: bytes | None, headers: Any) -> None:
                producer.produce(delivery, topic, value, key=key, headers=headers)

            try:
                result = await handle(batch, emit)
            except TransientError:
                raise
            except Exception as exc:
                log.exception(
                    "batch_failed",
                    agent=name,
                    topic=batch[0].topic,
                    partitions=sorted({m.partition for m in batch}),
                    offsets=f"{min(m.offset for m in batch)}..{max(m.offset for m in batch)}",
                )
                raise BatchFailed(f"{name}: {type(exc).__name__}: {exc}") from exc
            await delivery.wait()
            return result

        def on_failing(failing: bool) -> None:
            (self.failing.add if failing else self.failing.discard)(name)

        self.in_flight[name] = time.monotonic()
        try:
            results = await retry_transient(attempt, COMPONENT, name, on_failing=on_failing)
        finally:
            self.in_flight.pop(name, None)
        self.watch.progress()
        try:
            for result in results:
                result.record()
        except Exception:  # delivered already: a metrics or logging fault must not hold offsets
            log.exception("batch_metrics_failed", agent=name)
        return results


def build(settings: Settings) -> Processor:
    """Models verified, topics and contracts ready, the app with its agents (not yet running)."""
    models = ModelSet.load(settings.processor)
    registry = prepare(settings, COMPONENT)
    processor = Processor(settings, models)
    for source in settings.sources:
        processor.add_source(source.name, registry)
    p = settings.processor
    log.info(
        "processor_ready",
        sources=[s.name for s in settings.sources],
        stages="fused" if p.fused else ",".join(p.stages),
        **models.describe(),
    )
    return processor


def main(settings: Settings) -> None:
    """Run the processor worker until SIGTERM/SIGINT."""
    processor = build(settings)
    try:
        run_worker(processor.app, loglevel=settings.log_level)
    finally:
        if processor.producer is not None:
            processor.producer.close()
