"""Helpers of the poller's integration tests: demo API settings, a poller task, topic readers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from producers.demo_api.server import DemoApi
from producers.poller import SourcePoller, start_pollers
from streamscore.avro import AvroCodec, load_schema, subject_for
from streamscore.dlq import parse_headers
from streamscore.kafka_config import reader_config
from streamscore.registry import SchemaRegistry
from streamscore.settings import DemoApiSettings, Settings
from streamscore.topics import dlq_topic, raw_topic


def demo(backlog: int = 2000, **kw: Any) -> DemoApiSettings:
    """Demo API settings on a free port with a fixed backlog; ``faults`` as a dict."""
    return DemoApiSettings(host="127.0.0.1", port=0, backlog=backlog, **kw)


def source(name: str, url: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": name,
        "url": f"{url}/transactions",
        "page_size": 200,
        "rate_limit_per_s": 200.0,
        "poll_interval_s": 0.2,
        "backoff_initial_s": 0.05,
        "backoff_cap_s": 0.5,
        "failure_cooldown_s": 1.0,
        "read_timeout_s": 2.0,
        "total_timeout_s": 5.0,
    }
    return base | kw


def read_topic(settings: Settings, topic: str, timeout_s: float = 20.0) -> list[Any]:
    """Every committed message of ``topic`` (read_committed), read to the end of each partition."""
    consumer = Consumer(reader_config(settings, "test-reader", **{"enable.partition.eof": True}))
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        parts = sorted(meta.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        pending = set(parts)
        out: list[Any] = []
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


def raw_ids(settings: Settings, name: str) -> list[str]:
    """Record ids in ``raw.<name>``; checks key == record_id == the payload's id on the way."""
    import orjson

    codec = AvroCodec(
        SchemaRegistry(settings.registry), subject_for(raw_topic(name)), load_schema("RawRecord")
    )
    ids = []
    for msg in read_topic(settings, raw_topic(name)):
        value = codec.decode(msg.value())
        rid = value["record_id"]
        assert msg.key().decode() == rid
        assert orjson.loads(value["payload"])["id"] == rid
        assert value["source"] == name
        ids.append(rid)
    return ids


def dlq_letters(settings: Settings, name: str) -> list[tuple[dict[str, str], bytes]]:
    return [(parse_headers(m.headers()), m.value()) for m in read_topic(settings, dlq_topic(name))]


def done(api: DemoApi, poller: SourcePoller, total: int) -> bool:
    """All ``total`` records served, the poller caught up and everything fetched committed."""
    s = poller.state
    return api.ledger.summary()["count"] >= total and s.caught_up and s.committed.position == s.position


async def wait_for(cond: Callable[[], bool], timeout_s: float, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.05)


class PollerRun:
    """The poller of ``settings`` running as a task of this event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.pollers: list[SourcePoller] = []

    async def prepare(self) -> None:
        """Topics, contract, publishers, cursors: everything before the first request."""
        self.pollers = await start_pollers(self.settings)

    @contextlib.asynccontextmanager
    async def started(self) -> AsyncIterator[PollerRun]:
        """Run the prepared pollers (preparing them first if needed) until the block ends."""
        if not self.pollers:
            await self.prepare()

        async def run() -> None:
            await asyncio.gather(*(p.run(self.stop) for p in self.pollers))

        self.task = asyncio.create_task(run())
        try:
            yield self
        finally:
            self.stop.set()
            await asyncio.wait_for(self.task, timeout=20)

    async def __aenter__(self) -> PollerRun:
        self._cm = self.started()
        return await self._cm.__aenter__()

    async def __aexit__(self, *exc: Any) -> None:
        await self._cm.__aexit__(*exc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def poll_to_end(
    make_settings: Callable[..., Settings],
    api_settings: DemoApiSettings,
    timeout_s: float = 25.0,
    idle_polls: int = 0,
    **source_kw: Any,
) -> tuple[DemoApi, Settings, str, SourcePoller]:
    """Serve ``api_settings``, poll one fresh source until every record is committed (and
    ``idle_polls`` more requests were answered after that), stop."""
    from producers.demo_api.server import serving
    from tests.conftest import unique

    total = api_settings.backlog if api_settings.max_records is None else api_settings.max_records
    async with serving(api_settings) as (api, url):
        name = unique("pf")
        settings = make_settings(sources=[source(name, url, **source_kw)])
        async with PollerRun(settings) as run:
            poller = run.pollers[0]
            await wait_for(lambda: done(api, poller, total), timeout_s, "all records committed")
            if idle_polls:
                seen = len(api.ledger.requests)
                await wait_for(lambda: len(api.ledger.requests) >= seen + idle_polls, timeout_s, "idle polls")
                await wait_for(lambda: poller.state.committed.position == poller.state.position, 5, "commit")
    return api, settings, name, poller
