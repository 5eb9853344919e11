"""The poll loop: every configured source, concurrently, from its stored cursor into ``raw.<source>``.

Per source two tasks share a small queue: the *fetcher* asks the API page after page (rate
limited, retried, guarded against loops), splits each page into records and dead letters and
encodes them; the *committer* publishes each page with its cursor (one Kafka transaction) and
only then counts the cursor as committed. The fetcher runs ahead by at most two pages, so HTTP
and Kafka overlap. When publishing fails, both tasks stop, the publisher is recreated and the
source resumes from its last committed cursor, after a backoff.

HTTP failures never crash the process: a request whose attempts are spent, a refused request or
a page that stays unparsable (it goes to ``dlq.<source>``, stage ``http-parse``) makes the source
cool down, exponentially up to ``failure_cooldown_s``, and try the same position again. Records
that are not objects or have no id go to the DLQ with stage ``extract``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import structlog

from producers.cursor_store import StoredCursor, load_cursors, start_position
from producers.extract import Item, PageParseError, get_path, parse_page, record_time, split_path
from producers.http_client import HttpGaveUp, HttpRefused, HttpResponse, SourceClient, backoff_delay, describe
from producers.pagination import NoProgressGuard, Strategy, strategy_for
from producers.publisher import PageBatch, PagePublisher
from producers.raw_record import RawRecordEncoder
from streamscore import metrics
from streamscore.avro import AvroCodec
from streamscore.dlq import DeadLetter
from streamscore.errors import ConfigError, RegistryUnavailable, TransientError
from streamscore.health import HealthServer, ProgressWatch
from streamscore.settings import Settings, SourceSettings
from streamscore.topics import raw_topic

log = structlog.get_logger(__name__)
COMPONENT = "poller"
QUEUED_PAGES = 4  # how far the fetcher may run ahead of the committed cursor
MERGE_RECORDS = 5000  # at most this many records (from whole pages) per transaction


def _letter_key(letter: DeadLetter) -> str:
    """Identity of a bad record within one position (ids never start with NUL)."""
    return "\0" + (letter.value or b"").decode("utf-8", "replace")


class Unparsable(Exception):
    def __init__(self, response: HttpResponse, error: PageParseError) -> None:
        super().__init__(str(error))
        self.response = response
        self.error = error


@dataclass
class SourceState:
    """What health checks and tests read about a source."""

    committed: StoredCursor
    position: str | None = None  # the fetcher's, ahead of ``committed`` by the queued pages
    caught_up: bool = False
    failures: int = 0
    last_error: str | None = None
    pages: int = 0
    newest_time: float | None = None
    publisher_ready: bool = False
    extras: dict[str, Any] = field(default_factory=dict)


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))


class SourcePoller:
    def __init__(
        self,
        settings: Settings,
        source: SourceSettings,
        codec: AvroCodec,
        start: StoredCursor,
        publisher: PagePublisher | None = None,
    ) -> None:
        self.publisher = publisher  # a started one, handed over by start_pollers
        self.settings = settings
        self.source = source
        self.name = source.name
        self.codec = codec
        self.encoder = RawRecordEncoder(codec)
        self.strategy: Strategy = strategy_for(source)
        self.records_path = split_path(source.records_path)
        self.id_path = split_path(source.id_path)
        self.time_path = split_path(source.time_path)
        self.state = SourceState(committed=start, position=start.position)
        self.watch = ProgressWatch(
            f"{COMPONENT}-{source.name}",
            settings.health.stall_after_s,
            backlog=lambda: not self.state.caught_up,
        )
        self.log = log.bind(source=source.name)

    # --- run ----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; Kafka failures restart from the committed cursor."""
        client = SourceClient(self.source)
        kafka_failures = 0
        try:
            while not stop.is_set():
                publisher, self.publisher = self.publisher or PagePublisher(self.settings, self.source), None
                try:
                    if not publisher.ready:
                        await publisher.start()
                    self.state.publisher_ready = True
                    await self._session(client, publisher, stop)
                except TransientError as exc:
                    kafka_failures += 1
                    self.state.publisher_ready = False
                    metrics.TRANSIENT_ERRORS.labels(component=COMPONENT, kind="kafka").inc()
                    delay = backoff_delay(kafka_failures, 1.0, self.source.failure_cooldown_s)
                    self.log.warning("publish_failed_resuming", error=str(exc)[:300], retry_in_s=delay)
                    await sleep_or_stop(stop, delay)
                else:
                    kafka_failures = 0
                finally:
                    self.state.publisher_ready = False
                    await publisher.close(timeout_s=10.0 if kafka_failures == 0 else 1.0)
        finally:
            await client.close()

    async def _session(self, client: SourceClient, publisher: PagePublisher, stop: asyncio.Event) -> None:
        queue: asyncio.Queue[PageBatch] = asyncio.Queue(maxsize=QUEUED_PAGES)
        fetcher = asyncio.create_task(self._fetch_loop(client, queue, stop), name=f"fetch-{self.name}")
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, fetcher}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    fetcher.result()  # re-raise a crash of the fetcher
                    return
                batch = getter.result()
                # pages that queued up while the last transaction committed share the next one
                while not queue.empty() and len(batch.records) < MERGE_RECORDS:
                    batch = batch.merge(queue.get_nowait())
                await self._commit(publisher, batch)
        finally:
            fetcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetcher

    async def _commit(self, publisher: PagePublisher, batch: PageBatch) -> None:
        await publisher.publish(batch)
        self.state.committed = batch.cursor
        self.watch.progress()
        if batch.records:
            metrics.POLLER_PRODUCED.labels(source=self.name).inc(len(batch.records))

    # --- fetch --------------------------------------------------------------------------
    async def _fetch_loop(
        self, client: SourceClient, queue: asyncio.Queue[PageBatch], stop: asyncio.Event
    ) -> None:
        position = self.state.position = self.state.committed.position
        records = self.state.committed.records
        guard = NoProgressGuard(self.source.page_size)
        seen_at: str | None = position
        seen: set[str] = set()
        failures = 0
        stalls = 0
        while not stop.is_set():
            try:
                response, body, items = await self._fetch(client, position)
            except Unparsable as exc:
                letter = self._parse_letter(exc, position)
                await queue.put(PageBatch(self._cursor(position, records), letters=[letter]))
                failures = await self._failed("http-parse", exc, failures, stop)
                continue
            except HttpGaveUp as exc:
                failures = await self._failed("http", exc, failures, stop)
                continue
            except HttpRefused as exc:  # 4xx: will not heal by itself soon; full cool-down
                failures = await self._failed("refused", exc, failures, stop)
                continue
            failures = 0
            self.state.last_error = None
            step = self.strategy.step(position, body, response.headers, len(items), response.url)
            batch, fingerprint, ids = self._split(items, position, response)
            why = guard.check(position, step, fingerprint)
            if why is not None:
                stalls += 1
                metrics.POLLER_FAILURES.labels(source=self.name, reason="no-progress").inc()
                self.log.warning("no_progress", reason=why, attempt=stalls)
                self.state.last_error = why
                if stalls >= self.source.retry_attempts:
                    stalls = 0
                    await sleep_or_stop(stop, self.source.failure_cooldown_s)
                else:
                    await sleep_or_stop(stop, backoff_delay(stalls, self.source.backoff_initial_s, 5.0))
                continue
            stalls = 0
            guard.accept(position, fingerprint)
            if position != seen_at:
                seen_at, seen = position, set()
            letter_keys = [_letter_key(letter) for letter in batch.letters]
            if seen:  # the same position again: publish only what it did not publish before
                batch.records = [r for r, i in zip(batch.records, ids, strict=True) if i not in seen]
                batch.letters = [
                    lt for lt, k in zip(batch.letters, letter_keys, strict=True) if k not in seen
                ]
            if step.position == position:
                seen.update(ids)
                seen.update(letter_keys)
            records += len(batch.records)
            batch.cursor = self._cursor(step.position, records)
            metrics.POLLER_FETCHED.labels(source=self.name).inc(len(items))
            self.state.pages += 1
            self._lag(items)
            if batch.records or batch.letters or step.position != position:
                await queue.put(batch)
            position = self.state.position = step.position
            self.state.caught_up = len(items) < self.source.page_size
            if self.state.caught_up:
                await sleep_or_stop(stop, self.source.poll_interval_s)

    async def _fetch(
        self, client: SourceClient, position: str | None
    ) -> tuple[HttpResponse, Any, list[Item]]:
        request = self.strategy.request(position)
        attempts = self.source.parse_attempts
        for attempt in range(1, attempts + 1):
            start = time.monotonic()
            response = await client.get(request.url, request.params)
            metrics.POLLER_PAGE_LATENCY.labels(source=self.name).observe(time.monotonic() - start)
            try:
                body, items = parse_page(response.body, self.records_path)
                return response, body, items
            except PageParseError as exc:
                if attempt == attempts:
                    raise Unparsable(response, exc) from exc
                metrics.POLLER_RETRIES.labels(source=self.name, reason="parse").inc()
                self.log.warning(
                    "page_unparsable_retrying", url=response.url, error=str(exc), attempt=attempt
                )
                await asyncio.sleep(
                    backoff_delay(attempt, self.source.backoff_initial_s, self.source.backoff_cap_s)
                )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _failed(self, reason: str, exc: Exception, failures: int, stop: asyncio.Event) -> int:
        failures += 1
        self.state.failures += 1
        self.state.last_error = f"{type(exc).__name__}: {exc}"[:500]
        if reason != "http":  # HttpGaveUp was counted by the client, with its last reason
            metrics.POLLER_FAILURES.labels(source=self.name, reason=reason).inc()
        if reason == "refused":
            delay = self.source.failure_cooldown_s
        else:
            cooldown = backoff_delay(failures, 1.0, self.source.failure_cooldown_s)
            delay = cooldown + min(1.0, self.source.poll_interval_s)
        self.log.error(
            "fetch_failed_cooling_down", reason=reason, retry_in_s=round(delay, 2), **describe(exc)
        )
        await sleep_or_stop(stop, delay)
        return failures

    # --- records ------------------------------------------------------------------------
    def _cursor(self, position: str | None, records: int) -> StoredCursor:
        return StoredCursor(self.name, self.source.pagination, position, records)

    def _split(
        self, items: list[Item], position: str | None, response: HttpResponse
    ) -> tuple[PageBatch, tuple[str | None, str | None, int], list[str]]:
        """Encode the records of a page; non-objects and id-less records become dead letters."""
        batch = PageBatch(self._cursor(position, 0))
        ids: list[str] = []
        fetched_at = int(time.time() * 1000)
        trace = uuid.uuid4().hex[:24]
        encode = self.encoder.page(self.name, fetched_at, position)
        for n, item in enumerate(items):
            value = item.value
            if not isinstance(value, dict):
                batch.letters.append(
                    self._extract_letter(
                        item, f"record is {type(value).__name__}, not an object", response, position
                    )
                )
                continue
            rid = get_path(value, self.id_path)
            if rid is None or rid == "" or isinstance(rid, bool | dict | list):
                batch.letters.append(
                    self._extract_letter(
                        item, f"record has no id at {self.source.id_path!r}", response, position
                    )
                )
                continue
            rid = str(rid)
            try:
                encoded = encode(rid, item.text, f"{trace}{n:08x}")
            except UnicodeEncodeError as exc:  # an id with a lone surrogate (from a \ud800 escape)
                batch.letters.append(
                    self._extract_letter(item, exc, response, position, stage="encode", rid=None)
                )
                continue
            if len(encoded) > self.source.max_record_bytes:  # Kafka would refuse the page forever
                cap = self.source.max_record_bytes
                why = f"record of {len(encoded)} bytes exceeds max_record_bytes ({cap})"
                letter = self._extract_letter(item, why, response, position, rid=rid)
                letter.value = (letter.value or b"")[: self.source.dlq_body_max_bytes]
                letter.extra |= {"record.bytes": str(len(encoded)), "record.truncated": "true"}
                batch.letters.append(letter)
                continue
            batch.records.append((rid.encode(), encoded))
            ids.append(rid)
        first = ids[0] if ids else None
        last = ids[-1] if ids else None
        return batch, (first, last, len(items)), ids

    def _extract_letter(
        self,
        item: Item,
        error: BaseException | str,
        response: HttpResponse,
        position: str | None,
        stage: str = "extract",
        rid: str | None = None,
    ) -> DeadLetter:
        return DeadLetter(
            source=self.name,
            stage=stage,
            error=error,
            key=rid.encode() if rid else None,
            value=item.text.encode(),
            record_id=rid,
            extra={"http.url": response.url, "http.status": str(response.status), "cursor": position or ""},
        )

    def _parse_letter(self, exc: Unparsable, position: str | None) -> DeadLetter:
        body = exc.response.body
        cap = self.source.dlq_body_max_bytes
        return DeadLetter(
            source=self.name,
            stage="http-parse",
            error=exc.error,
            key=None,
            value=body[:cap],
            attempt=self.source.parse_attempts,
            extra={
                "http.url": exc.response.url,
                "http.status": str(exc.response.status),
                "http.body.bytes": str(len(body)),
                "http.body.truncated": str(len(body) > cap).lower(),
                "cursor": position or "",
            },
        )

    def _lag(self, items: list[Item]) -> None:
        if self.time_path:
            for item in items[::-1][:10]:
                if isinstance(item.value, dict):
                    at = record_time(get_path(item.value, self.time_path))
                    if at is not None:
                        self.state.newest_time = max(at, self.state.newest_time or at)
                        break
        if self.state.newest_time is not None:
            metrics.POLLER_CURSOR_LAG.labels(source=self.name).set(
                max(0.0, time.time() - self.state.newest_time)
            )

    def check(self) -> tuple[bool, str]:
        """Readiness of this source: Kafka publisher up, API answering, not stalled."""
        if not self.state.publisher_ready:
            return False, "kafka publisher not ready"
        if self.state.last_error:
            return False, self.state.last_error
        return self.watch.check()


# --- process ------------------------------------------------------------------------------
async def start_pollers(settings: Settings, names: list[str] | None = None) -> list[SourcePoller]:
    """Topics, the raw contract, publishers and stored cursors for the sources (all by default).

    Publishers start (``init_transactions``) before the cursors are read: that fences a killed
    predecessor and aborts its open transaction, which would otherwise hold every
    ``read_committed`` reader of the cursor topic until the transaction times out.
    """
    from streamscore.bootstrap import codec, wait_for
    from streamscore.registry import SchemaRegistry
    from streamscore.topics import ensure_topics

    sources = [s for s in settings.sources if not names or s.name in names]
    missing = set(names or ()) - {s.name for s in sources}
    if missing:
        raise ConfigError("STREAMSCORE_SOURCES", f"no source named {', '.join(sorted(missing))}")
    await asyncio.to_thread(wait_for, "kafka", lambda: ensure_topics(settings), COMPONENT)
    registry = SchemaRegistry(settings.registry)
    codecs = {}
    for source in sources:
        topic = raw_topic(source.name)
        codecs[source.name] = raw_codec = codec(registry, settings, topic)

        def contract(t: str = topic, c: AvroCodec = raw_codec) -> int:
            if settings.registry.mode == "register":
                # registry down: a schema the disk cache knows was registered (with its level)
                # by an earlier start; schema_id falls back to that cache, or raises for a new one
                with contextlib.suppress(RegistryUnavailable):
                    registry.set_compatibility(f"{t}-value")
            return c.schema_id

        await asyncio.to_thread(wait_for, "registry", contract, COMPONENT)
    publishers = {}
    for source in sources:
        publishers[source.name] = publisher = PagePublisher(settings, source)
        for attempt in range(1, 1_000_000):
            try:
                await publisher.start()
                break
            except TransientError as exc:
                metrics.TRANSIENT_ERRORS.labels(component=COMPONENT, kind="kafka").inc()
                log.warning(
                    "waiting_for_dependency", what="kafka-transactions", attempt=attempt, error=str(exc)
                )
                await asyncio.sleep(backoff_delay(attempt, 0.5, 10.0))
    stored = await asyncio.to_thread(wait_for, "cursors", lambda: load_cursors(settings), COMPONENT)
    pollers = []
    for source in sources:
        start = start_position(source, stored.get(source.name))
        log.info("source_resuming", source=source.name, position=start.position, records=start.records)
        pollers.append(SourcePoller(settings, source, codecs[source.name], start, publishers[source.name]))
    return pollers


async def run_poller(
    settings: Settings,
    names: list[str] | None = None,
    stop: asyncio.Event | None = None,
    health: bool = True,
) -> None:
    """``streamscore poll``: poll until SIGINT/SIGTERM (or ``stop``)."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
    started: list[SourcePoller] = []
    server = HealthServer(COMPONENT, settings.health.host, settings.health.poller_port) if health else None
    if server is not None:
        server.add_check("started", lambda: (bool(started), "ok" if started else "starting"))
        await server.start()
    try:
        pollers = await start_pollers(settings, names)
        if server is not None:
            for poller in pollers:
                server.add_check(f"source:{poller.name}", poller.check)
        started.extend(pollers)
        await asyncio.gather(*(p.run(stop) for p in pollers))
    finally:
        if server is not None:
            await server.stop()
