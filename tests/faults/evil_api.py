"""A tiny HTTP API for the bad-input test: fixed pages of raw bytes per source, in a thread.

``GET /<source>/transactions?cursor=<n>`` answers page ``n`` (the body exactly as given: broken
JSON, non-UTF-8 bytes, whatever the test needs); past the last page it answers an empty page with
the same cursor, so a poller stays caught up. Cursor pagination as the poller's default source:
``{"data": [...], "next_cursor": "<n + 1>"}``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from aiohttp import web


def page(records: Sequence[Any | bytes], next_cursor: int) -> bytes:
    """A page body; a ``bytes`` item is spliced in as is (raw JSON text, possibly broken)."""
    parts = [r if isinstance(r, bytes) else json.dumps(r).encode() for r in records]
    return b'{"data":[' + b",".join(parts) + b'],"next_cursor":"' + str(next_cursor).encode() + b'"}'


@contextmanager
def serving(pages: dict[str, list[bytes]]) -> Iterator[str]:
    """Serve ``pages`` (source -> bodies) on a free port; yields the base URL."""

    async def transactions(request: web.Request) -> web.Response:
        bodies = pages.get(request.match_info["source"], [])
        n = int(request.query.get("cursor") or 0)
        body = bodies[n] if n < len(bodies) else b'{"data":[],"next_cursor":"' + str(n).encode() + b'"}'
        return web.Response(body=body, content_type="application/json")

    ready = threading.Event()
    state: dict[str, Any] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        state["loop"] = loop
        app = web.Application()
        app.router.add_get("/{source}/transactions", transactions)
        runner = web.AppRunner(app, access_log=None)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        state["port"] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="evil-api", daemon=True)
    thread.start()
    assert ready.wait(10), "the test API did not start"
    try:
        yield f"http://127.0.0.1:{state['port']}"
    finally:
        state["loop"].call_soon_threadsafe(state["loop"].stop)
        thread.join(10)
