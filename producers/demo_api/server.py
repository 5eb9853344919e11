"""The demo API: card transactions over HTTP, paginated, incremental, with injected faults.

``GET /transactions`` pages through the records (oldest first). The position is one of
``cursor=<token>`` or ``since=<token>`` (records after the one the token names), ``page=<n>``
(1-based) or ``offset=<n>``; ``limit`` is the page size. The body is
``{"data": [...], "next_cursor": ..., "has_more": ...}`` and ``Link: <...>; rel="next"`` names the
cursor URL of the next page (always present, so a client can come back later for newer records).

``GET /_ledger`` tells what was served: id ranges (``?ids=1`` adds every id), the number of bad
records injected, requests and faults. ``GET /_requests`` lists each data request (time, fault,
status, query). ``GET /healthz`` answers 200. Records are pre-serialised; a page is one join.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

import orjson
from aiohttp import web

from producers.demo_api.faults import FaultPlan
from producers.demo_api.generator import record_id
from producers.demo_api.store import BadCursor, RecordStore, decode_cursor, encode_cursor
from streamscore.settings import DemoApiSettings

LOG_MAX = 200_000


class Ledger:
    """What the API served in complete responses: seq ranges, injected bad records, requests."""

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = []
        self.bad_records = Counter[str]()
        self.faults = Counter[str]()
        self.statuses = Counter[int]()
        self.requests: deque[dict[str, Any]] = deque(maxlen=LOG_MAX)

    def served(self, first: int, last: int) -> None:
        if last >= first:
            self.ranges.append((first, last))

    def merged(self) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for first, last in sorted(self.ranges):
            if out and first <= out[-1][1] + 1:
                out[-1] = (out[-1][0], max(out[-1][1], last))
            else:
                out.append((first, last))
        return out

    def ids(self) -> list[str]:
        return [record_id(seq) for first, last in self.merged() for seq in range(first, last + 1)]

    def summary(self, with_ids: bool = False) -> dict[str, Any]:
        merged = self.merged()
        body: dict[str, Any] = {
            "ranges": merged,
            "count": sum(last - first + 1 for first, last in merged),
            "bad_records": dict(self.bad_records),
            "faults": dict(self.faults),
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "requests": len(self.requests),
        }
        if with_ids:
            body["ids"] = self.ids()
        return body


class DemoApi:
    """State and handlers of one demo API instance."""

    def __init__(self, settings: DemoApiSettings) -> None:
        self.settings = settings
        self.store = RecordStore(settings)
        self.plan = FaultPlan(settings.faults)
        self.ledger = Ledger()
        self.n = 0
        self._token = settings.token.get_secret_value() if settings.token else None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/transactions", self.transactions)
        app.router.add_get("/_ledger", self.ledger_view)
        app.router.add_get("/_requests", self.requests_view)
        app.router.add_get("/healthz", self.healthz)
        return app

    # --- helpers ------------------------------------------------------------------------
    def _authorised(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        given = request.headers.get("X-API-Key") or ""
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[7:]
        return secrets.compare_digest(given.encode(), self._token.encode())

    def _position(self, query: Any, limit: int) -> int:
        """Seq after which the page starts, from cursor/since/page/offset."""
        token = query.get("cursor") or query.get("since")
        if token:
            return decode_cursor(token)
        if "page" in query:
            page = int(query["page"])
            if page < 1:
                raise ValueError("page starts at 1")
            return (page - 1) * limit
        if "offset" in query:
            offset = int(query["offset"])
            if offset < 0:
                raise ValueError("offset must be >= 0")
            return offset
        return 0

    def _log(self, request: web.Request, t: float, fault: str | None, status: int, **extra: Any) -> None:
        self.ledger.statuses[status] += 1
        if fault:
            self.ledger.faults[fault] += 1
        entry = {"n": self.n, "t": t, "fault": fault, "status": status, "query": dict(request.query)}
        self.ledger.requests.append(entry | extra)

    def _throttle(self, request: web.Request, t: float) -> web.Response:
        """429 with Retry-After; the log entry keeps the deadline it announced (``not_before``)."""
        f = self.settings.faults
        if f.retry_after_form == "http-date":
            not_before = float(int(time.time()) + f.retry_after_s + 1)
            value = formatdate(not_before, usegmt=True)
        else:
            not_before = time.time() + f.retry_after_s
            value = str(f.retry_after_s)
        self._log(request, t, "throttle", 429, not_before=not_before)
        return web.json_response({"error": "rate limited"}, status=429, headers={"Retry-After": value})

    # --- handlers -----------------------------------------------------------------------
    async def transactions(self, request: web.Request) -> web.StreamResponse:
        t = time.time()
        if not self._authorised(request):
            self.ledger.statuses[401] += 1
            return web.json_response({"error": "unauthorised"}, status=401)
        self.n += 1
        query = request.query
        try:
            limit = int(query.get("limit", self.settings.default_page_size))
            if not 1 <= limit <= self.settings.max_page_size:
                raise ValueError(f"limit must be 1..{self.settings.max_page_size}")
            after = self._position(query, limit)
        except (ValueError, BadCursor) as exc:
            self._log(request, t, None, 400)
            return web.json_response({"error": f"bad request: {exc}"}, status=400)
        fault = self.plan.pick(self.n)
        if fault == "throttle":
            return self._throttle(request, t)
        if fault == "error":
            status = self.settings.faults.error_status
            self._log(request, t, fault, status)
            return web.json_response({"error": "injected"}, status=status)
        if fault == "drop":
            self._log(request, t, fault, 0)
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # aiohttp drops the connection without a response
        if fault == "slow":
            await asyncio.sleep(self.settings.faults.slow_s)
        return self._page(request, t, fault, after, limit)

    def _page(
        self, request: web.Request, t: float, fault: str | None, after: int, limit: int
    ) -> web.Response:
        f = self.settings.faults
        if fault == "repeat":
            after = max(0, after - limit)
        first = max(0, after - f.overlap_records) if fault == "overlap" else after
        items, stop, total = self.store.page(after, limit)
        if first < after:
            items = self.store.records[first:after] + items
        if fault == "non_object":
            items = [*items[: len(items) // 2], b'"not an object"', *items[len(items) // 2 :]]
        elif fault == "missing_id":
            bad = orjson.loads(items[-1]) if items else {"customer_id": "cus_00000"}
            bad.pop("id", None)
            items = [*items, orjson.dumps(bad)]
        next_token = encode_cursor(stop)
        body = b"".join(
            (
                b'{"data":[',
                b",".join(items),
                b'],"next_cursor":"',
                next_token.encode(),
                b'","has_more":',
                b"true" if stop < total else b"false",
                b"}",
            )
        )
        link = request.url.with_query({"cursor": next_token, "limit": str(limit)})
        headers = {"Link": f'<{link}>; rel="next"'}
        if fault == "truncate":
            self._log(request, t, fault, 200)
            return web.Response(body=body[: max(1, len(body) // 2)], content_type="application/json")
        self.ledger.served(first + 1, stop)
        if fault in ("non_object", "missing_id"):
            self.ledger.bad_records[fault] += 1
        self._log(request, t, fault, 200)
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def ledger_view(self, request: web.Request) -> web.Response:
        with_ids = request.query.get("ids") in ("1", "true")
        return web.Response(body=orjson.dumps(self.ledger.summary(with_ids)), content_type="application/json")

    async def requests_view(self, _: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(list(self.ledger.requests)), content_type="application/json")

    async def healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "alive", "records": self.store.available()})


@contextlib.asynccontextmanager
async def serving(settings: DemoApiSettings) -> AsyncIterator[tuple[DemoApi, str]]:
    """Run the demo API in this event loop; yields (api, base URL). Port 0 picks a free port."""
    api = DemoApi(settings)
    runner = web.AppRunner(api.app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else settings.port
    try:
        yield api, f"http://{settings.host}:{port}"
    finally:
        await runner.cleanup()


async def serve_forever(settings: DemoApiSettings) -> None:
    """``streamscore demo-api``: serve until cancelled."""
    import structlog

    log = structlog.get_logger(__name__)
    async with serving(settings) as (api, url):
        log.info(
            "demo_api_listening",
            url=f"{url}/transactions",
            backlog=len(api.store.records),
            rate_per_s=settings.rate_per_s,
            auth=settings.token is not None,
        )
        await asyncio.Event().wait()
