"""The sink Faust app: ``predictions.<source>`` (Avro ``Prediction``) → MongoDB.

One agent (concurrency 1) takes micro-batches (:func:`streams.batch_stream.batches`); for each batch it
decodes, builds documents, upserts them in one unordered bulk write, dead-letters what cannot be
stored, and only then returns, so Faust acks (and later commits) the batch after MongoDB
acknowledged it. While MongoDB is unreachable the batch is retried with backoff, nothing is
committed (lag grows), ``/readyz`` fails and ``/healthz`` stays alive.

A batch is acked only when the loop asks for the next one, and on stop Faust first waits for
every in-flight message to be acked. So once the app is stopping (or the agent is cancelled) the
sink gives the in-flight write up to ``sink.shutdown_grace_s``; if MongoDB still has not
acknowledged it, the batch is *withheld* (its messages marked acked without telling the
consumer, as the processor does), so its offsets are never committed and the stop completes; the
next owner re-reads the batch. Faust never re-reads withheld messages in a running worker, so
when that happens without a stop (an unexpected error, a cancellation by a rebalance) the worker
is crashed on purpose: the restart re-reads the batch and commits go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import bson
import faust
import structlog
from bson.raw_bson import RawBSONDocument
from faust.types import Message

from streams.batch_stream import batches, withhold
from streams.faust_runtime import create_app, retry_transient, run_worker
from streams.mongo_writer import MongoWriter, Rejected
from streamscore import metrics
from streamscore.avro import AvroCodec
from streamscore.bootstrap import codec, prepare
from streamscore.dlq import DeadLetter
from streamscore.errors import DataError, TransientError
from streamscore.health import ProgressWatch
from streamscore.kafka_config import producer_config
from streamscore.lag import group_has_backlog
from streamscore.producer import AsyncProducer
from streamscore.settings import Settings
from streamscore.topics import dlq_topic, predictions_topic

log = structlog.get_logger(__name__)
COMPONENT = "sink"
DLQ_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
STOP_POLL_S = 0.25


def document_id(source: str, record_id: str, model_name: str, model_version: str) -> str:
    """The deterministic ``_id``: one document per (source, record, model name, model version)."""
    return f"{source}:{record_id}:{model_name}:{model_version}"


def to_document(
    prediction: dict[str, Any], topic: str, partition: int, offset: int, stored_at: datetime
) -> dict[str, Any]:
    """A decoded Prediction as the stored document (datetimes become BSON dates)."""
    p = prediction
    return {
        "_id": document_id(p["source"], p["record_id"], p["model_name"], p["model_version"]),
        "source": p["source"],
        "record_id": p["record_id"],
        "event_time": p["event_time"],
        "model": {"name": p["model_name"], "version": p["model_version"], "variant": p["variant"]},
        "score": p["score"],
        "label": p["label"],
        "confidence": p["confidence"],
        "low_confidence": p["low_confidence"],
        "anomaly": p["anomaly"],
        "reasons": p["reasons"],
        "customer_id": p["customer_id"],
        "amount_eur": p["amount_eur"],
        "fetched_at": p["fetched_at"],
        "scored_at": p["scored_at"],
        "stored_at": stored_at,
        "trace_id": p["trace_id"],
        "kafka": {"topic": topic, "partition": partition, "offset": offset},
    }


@dataclass
class SinkState:
    """What ``/readyz`` reports: started, MongoDB answering, no write being retried."""

    started: bool = False
    mongo_ok: bool = False
    failing: bool = False
    in_flight: bool = False

    def set_failing(self, failing: bool) -> None:
        self.failing = failing

    def check(self) -> tuple[bool, str]:
        if not self.started:
            return False, "starting: waiting for MongoDB (indexes)"
        if self.failing:
            return False, "MongoDB write failing: retrying with backoff, not committing"
        if not self.mongo_ok:
            return False, "MongoDB does not answer ping"
        return True, "ok"


@dataclass
class Prepared:
    """A batch turned into documents, plus the letters of what could not be."""

    docs: list[RawBSONDocument] = field(default_factory=list)
    origin: list[tuple[str, Message]] = field(default_factory=list)  # (source, message) per doc
    fetched_at: list[datetime] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)


async def _no_crash(_: BaseException) -> None:
    return None


class BatchAbandoned(Exception):
    """A batch failed for an unexpected reason; its offsets were withheld from the commit."""


class Sink:
    """Turns take-batches into MongoDB upserts and dead letters."""

    def __init__(
        self,
        settings: Settings,
        codecs: dict[str, AvroCodec],
        stopping: Callable[[], bool] = lambda: False,
        crash: Callable[[BaseException], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.sources = {predictions_topic(s.name): s.name for s in settings.sources}
        self.codecs = codecs
        self.stopping = stopping
        self.crash = crash or _no_crash
        self._crashing: asyncio.Future[None] | None = None
        self.state = SinkState()
        self.progress = ProgressWatch(
            COMPONENT,
            settings.health.stall_after_s,
            backlog=lambda: self.state.in_flight or group_has_backlog(settings, settings.sink.app_id),
        )
        self.writer = MongoWriter(settings.mongo, settings.sink)
        big: dict[str, Any] = {"message.max.bytes": DLQ_MAX_MESSAGE_BYTES}
        self.dlq = AsyncProducer(producer_config(settings, "sink-dlq", **big))

    async def _retry(self, fn: Callable[[], Any], what: str) -> Any:
        cfg = self.settings.sink
        return await retry_transient(
            fn, COMPONENT, what, self.state.set_failing, cfg.retry_initial_s, cfg.retry_cap_s
        )

    async def start(self) -> None:
        await self._retry(self.writer.start, "mongodb-start")
        self.state.started = self.state.mongo_ok = True
        log.info(
            "sink_started",
            server=self.writer.server,
            write_mode=self.writer.mode,
            max_document_bytes=self.writer.max_document_bytes,
        )

    async def watch_mongo(self) -> None:
        """Keep ``mongo_ok`` current, so an idle sink also reports an outage."""
        while True:
            self.state.mongo_ok = await self.writer.ping()
            await asyncio.sleep(self.settings.sink.ping_interval_s)

    async def handle(self, messages: Sequence[Message]) -> None:
        """Process one batch so that returning means: durable, or withheld from the commit.

        When the app starts stopping (or the agent is cancelled) during the batch, it gets
        ``shutdown_grace_s`` to finish; otherwise its offsets are withheld. An unexpected error
        withholds the batch and raises :class:`BatchAbandoned` (the worker crashes and restarts).
        """
        task = asyncio.ensure_future(self.process(messages))
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=STOP_POLL_S)
                if done or self.stopping():
                    break
            await self._settle(task, messages, "stopping")
        except asyncio.CancelledError:
            await self._settle(task, messages, "cancelled")
            raise

    async def _settle(self, task: asyncio.Future[None], messages: Sequence[Message], why: str) -> None:
        if not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({task}, timeout=self.settings.sink.shutdown_grace_s)
        if task.done() and not task.cancelled() and task.exception() is None:
            return
        error = None if not task.done() or task.cancelled() else task.exception()
        task.cancel()
        withhold(messages)
        log.error(
            "batch_withheld_from_commit",
            reason=why if error is None else f"{type(error).__name__}: {error}",
            records=len(messages),
            exc_info=error,
        )
        if error is not None:
            raise BatchAbandoned(f"batch not acknowledged by MongoDB: {error!r}") from error
        if not self.stopping():  # cancelled without a stop (a rebalance): the gap would stay
            self._crashing = asyncio.ensure_future(self.crash(BatchAbandoned("withheld, not stopping")))

    async def process(self, messages: Sequence[Message]) -> None:
        self.state.in_flight = True
        prepared: Prepared = await self._retry(lambda: self._prepare(messages), "registry")
        if prepared.docs:
            batch = self.writer.batch(prepared.docs)
            started = time.perf_counter()
            await self._retry(batch.attempt, "mongodb-write")
            acked = datetime.now(UTC)
            metrics.SINK_WRITE_LATENCY.observe(time.perf_counter() - started)
            self._count(prepared, batch.rejected, acked)
            for index, why in batch.rejected.items():
                prepared.letters.append(self._letter(*prepared.origin[index], "sink-data", _why(why)))
        if prepared.letters:
            await self._retry(lambda: self._send_letters(prepared.letters), "dlq")
        self.state.in_flight = False
        self.progress.progress()

    async def _prepare(self, messages: Sequence[Message]) -> Prepared:
        """Decode and build documents; a RegistryUnavailable aborts the batch (retried)."""
        out = Prepared()
        limit = self.writer.max_document_bytes or 16 * 1024 * 1024
        stored_at = datetime.now(UTC)
        for msg in messages:
            source = self.sources[msg.topic]
            try:
                prediction = self.codecs[msg.topic].decode(msg.value)
            except DataError as exc:
                out.letters.append(self._letter(source, msg, "decode", exc))
                continue
            try:
                raw = bson.encode(to_document(prediction, msg.topic, msg.partition, msg.offset, stored_at))
            except (bson.errors.InvalidDocument, KeyError, TypeError, ValueError) as exc:
                out.letters.append(self._letter(source, msg, "sink-data", exc, prediction))
                continue
            if len(raw) > limit:
                why = f"document of {len(raw)} bytes exceeds MongoDB's limit of {limit} bytes"
                out.letters.append(self._letter(source, msg, "sink-data", why, prediction))
                continue
            out.docs.append(RawBSONDocument(raw))
            out.origin.append((source, msg))
            out.fetched_at.append(prediction["fetched_at"])
        return out

    def _count(self, prepared: Prepared, rejected: dict[int, Rejected], acked: datetime) -> None:
        written: dict[str, int] = {}
        for i, (source, _) in enumerate(prepared.origin):
            if i in rejected:
                metrics.SINK_WRITE_ERRORS.labels(kind="document").inc()
                continue
            written[source] = written.get(source, 0) + 1
            metrics.END_TO_END.labels(source=source).observe(
                max(0.0, (acked - prepared.fetched_at[i]).total_seconds())
            )
        for source, n in written.items():
            metrics.SINK_WRITTEN.labels(source=source).inc(n)

    def _letter(
        self,
        source: str,
        msg: Message,
        stage: str,
        error: BaseException | str,
        prediction: dict[str, Any] | None = None,
    ) -> DeadLetter:
        key = msg.key if isinstance(msg.key, bytes | type(None)) else str(msg.key).encode()
        record_id = prediction["record_id"] if prediction else None
        if record_id is None and key:
            record_id = key.decode("utf-8", "replace")
        return DeadLetter(
            source=source,
            stage=stage,
            error=error,
            key=key,
            value=msg.value,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            record_id=record_id,
        )

    async def _send_letters(self, letters: list[DeadLetter]) -> None:
        batch = self.dlq.batch()
        for letter in letters:
            self.dlq.produce(batch, dlq_topic(letter.source), letter.value, letter.key, letter.headers())
        await batch.wait()
        for letter in letters:
            letter.record()

    async def close(self) -> None:
        await self.writer.close()
        await asyncio.to_thread(self.dlq.close, 10.0)


def _why(rejected: Rejected) -> str:
    return f"MongoDB refused the document (code {rejected.code}): {rejected.message}"


def build_app(settings: Settings) -> faust.App:
    """The sink Faust app, ready for a worker; prepares topics and contracts first."""
    registry = prepare(settings, COMPONENT)
    topics = [predictions_topic(s.name) for s in settings.sources]
    codecs = {t: codec(registry, settings, t) for t in topics}
    cfg = settings.sink
    cfg.datadir.mkdir(parents=True, exist_ok=True)
    app = create_app(
        settings,
        cfg.app_id,
        COMPONENT,
        settings.health.sink_port,
        datadir=str(cfg.datadir / "{conf.name}"),
        broker_session_timeout=cfg.session_timeout_s,
        broker_heartbeat_interval=min(3.0, cfg.session_timeout_s / 3),
    )
    channel = app.topic(
        *topics, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )

    @app.agent(channel, concurrency=1)
    async def store(stream: Any) -> None:
        sink = Sink(settings, codecs, stopping=lambda: bool(app.should_stop), crash=app.crash)
        app.health.add_check("mongodb", sink.state.check)  # type: ignore[attr-defined]
        app.health.add_check("progress", sink.progress.check)  # type: ignore[attr-defined]
        watcher = asyncio.ensure_future(sink.watch_mongo())
        try:
            await sink.start()
            async for messages in batches(stream, cfg.batch_size, cfg.batch_within_s):
                try:
                    await sink.handle(messages)
                except BatchAbandoned as exc:
                    await app.crash(exc)  # the worker exits non-zero; a restart re-reads the batch
                    raise
        finally:
            watcher.cancel()
            await sink.close()

    return app


def main(settings: Settings) -> None:
    """``streamscore sink``: run the sink worker until SIGTERM/SIGINT."""
    try:
        app = build_app(settings)
    except TransientError as exc:
        log.error("sink_start_failed", error=str(exc))
        raise SystemExit(1) from exc
    run_worker(app)
