"""Entry point of every process the harness starts: ``python -m bench.launch ROLE --dir DIR``.

The launcher installs the stamp taps (:mod:`bench.stamps`) before the component is imported,
then runs it with the settings from the environment (the harness sets ``STREAMSCORE_*`` per
run: unique source, consumer groups, MongoDB database, health ports 0):

- ``api``: the bundled demo API, whose offered rate the harness changes while it runs
  (``POST /_bench/rate?r=<records/s>``; ``GET /_bench/stats`` tells how many records exist);
- ``poller``, ``processor``, ``sink``: streamscore's own components, unchanged;
- ``quix``, ``faststream``, ``floor``: the peers in ``bench/peers/``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from bench import stamps
from producers.demo_api.server import DemoApi
from producers.demo_api.store import RecordStore
from streamscore.settings import DemoApiSettings, Settings, load_settings

PEERS = ("quix", "faststream", "floor")
ROLES = ("api", "poller", "processor", "sink", *PEERS)


class SteppedStore(RecordStore):
    """The demo API's records, appearing at a rate the harness can change while serving."""

    def __init__(self, settings: DemoApiSettings) -> None:
        super().__init__(settings.model_copy(update={"rate_per_s": 0.0}))
        self.rate = 0.0
        self.base = float(len(self.records))
        self.since = time.time()

    def set_rate(self, rate: float) -> None:
        now = time.time()
        self.base += (now - self.since) * self.rate
        self.since, self.rate = now, rate

    def available(self) -> int:
        n = int(self.base + (time.time() - self.since) * self.rate)
        if self.limit is not None:
            n = min(n, self.limit)
        if n > len(self.records):
            self._fill(n)
        return len(self.records)


async def serve_api(settings: DemoApiSettings, port: int) -> None:
    api = DemoApi(settings)
    store = SteppedStore(settings)
    api.store = store

    async def rate(request: web.Request) -> web.Response:
        store.set_rate(float(request.query["r"]))
        return web.json_response({"rate": store.rate, "available": store.available()})

    async def stats(_: web.Request) -> web.Response:
        return web.json_response({"rate": store.rate, "available": store.available(), "t": time.time()})

    app = api.app()
    app.router.add_post("/_bench/rate", rate)
    app.router.add_get("/_bench/stats", stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, port, reuse_address=True).start()
    await asyncio.Event().wait()


def tap_arrivals(role: str, recorder: stamps.Recorder) -> None:
    """Stamp "agent in" in streamscore's stages: each record's age since its Kafka timestamp when
    the stage takes it (series ``in.<topic kind>``). Wraps the processor's ``incoming`` and the
    sink's ``Sink.handle``; if either is renamed, the stamp is simply missing from the report.
    """

    def seen(topic: str, timestamp_s: float | None, now: float) -> None:
        if timestamp_s:
            recorder.observe(f"in.{topic.split('.', 1)[0]}", now - timestamp_s, now)

    if role == "processor":
        import streams.processor as processor

        original = getattr(processor, "incoming", None)
        if original is not None:

            def incoming(message: Any) -> Any:
                seen(message.topic, message.timestamp, time.time())
                return original(message)

            processor.incoming = incoming  # type: ignore[assignment]
    elif role == "sink":
        from streams.sink import Sink

        handle = Sink.handle

        async def stamped(self: Sink, messages: Any) -> None:
            now = time.time()
            for message in messages:
                seen(message.topic, message.timestamp, now)
            await handle(self, messages)

        Sink.handle = stamped  # type: ignore[method-assign]


def run(role: str, settings: Settings, port: int) -> None:
    if role == "api":
        asyncio.run(serve_api(settings.demo_api, port))
    elif role == "poller":
        from producers.poller import run_poller

        asyncio.run(run_poller(settings))
    elif role == "processor":
        from streams.processor import main as process

        process(settings)
    elif role == "sink":
        from streams.sink import main as sink

        sink(settings)
    elif role == "quix":
        from bench.peers.quix_app import main as quix

        quix(settings)
    elif role == "faststream":
        from bench.peers.faststream_app import main as faststream

        faststream(settings)
    elif role == "floor":
        from bench.peers.floor import run_e2e

        run_e2e(settings)
    else:
        raise SystemExit(f"unknown role {role!r}; one of {', '.join(ROLES)}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Run one benchmarked process with stamp taps.")
    parser.add_argument("role", choices=ROLES)
    parser.add_argument("--dir", type=Path, required=True, help="Where stamps are written.")
    parser.add_argument("--port", type=int, default=0, help="Port of the demo API (role api).")
    args = parser.parse_args()
    from streamscore.log import configure_logging

    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    recorder = stamps.install(args.dir, args.role)
    tap_arrivals(args.role, recorder)
    run(args.role, settings, args.port)


if __name__ == "__main__":
    main()
