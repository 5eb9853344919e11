"""The poller's HTTP client: one pooled aiohttp session, rate limit and retry gate per source.

Errors (all :class:`streamscore.errors.StreamscoreError`):

- ``RetryableHttpError`` one attempt failed in a way a retry may cure: connect error, timeout,
  dropped connection, 5xx, 429 (``reason`` says which; ``retry_after`` holds the server's ask).
- ``HttpGaveUp``         the bounded attempts are spent (a :class:`TransientError`: the poller
  cools down and tries again later, it does not crash).
- ``HttpRefused``        a 4xx other than 408/429: retrying cannot help (bad URL, auth, ...).

Retries wait with exponential backoff and full jitter (``uniform(0, min(cap, initial * 2**n))``),
except after a ``Retry-After``: then no request of the source leaves before that deadline. Every
request first takes a token from the source's limiter (aiolimiter), so a source never exceeds
``rate_limit_per_s`` whatever retries and pages do.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from streamscore import metrics
from streamscore.errors import StreamscoreError, TransientError
from streamscore.settings import SourceSettings

RETRYABLE_4XX = (408, 425, 429)


class RetryableHttpError(TransientError):
    """One failed attempt that a retry may cure."""

    def __init__(self, reason: str, detail: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


class HttpGaveUp(TransientError):
    """The bounded attempts of one request are spent."""

    def __init__(self, url: str, attempts: int, last: RetryableHttpError) -> None:
        super().__init__(f"GET {url}: gave up after {attempts} attempts; last: {last}")
        self.reason = last.reason
        self.status = last.status


class HttpRefused(StreamscoreError):
    """A client error (4xx) that retrying cannot cure."""

    def __init__(self, url: str, status: int, body: bytes) -> None:
        super().__init__(f"GET {url}: HTTP {status}: {body[:300].decode('utf-8', 'replace')}")
        self.status = status


@dataclass(frozen=True)
class HttpResponse:
    url: str
    status: int
    headers: Mapping[str, str]
    body: bytes
    elapsed_s: float


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date); None if invalid."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_delay(
    attempt: int, initial: float, cap: float, rand: Callable[[], float] = random.random
) -> float:
    """Full-jitter delay before retry ``attempt`` (1 = first): uniform(0, min(cap, initial * 2^(n-1)))."""
    ceiling = min(cap, initial * (2 ** max(0, attempt - 1)))
    return rand() * ceiling


class RetryAfterGate:
    """The earliest time (monotonic) the next request of a source may leave."""

    def __init__(self) -> None:
        self.not_before = 0.0

    def push(self, delay_s: float) -> None:
        self.not_before = max(self.not_before, time.monotonic() + delay_s)

    async def wait(self) -> float:
        """Sleep until the deadline; return seconds waited."""
        waited = 0.0
        while (left := self.not_before - time.monotonic()) > 0:
            await asyncio.sleep(left)
            waited += left
        return waited


def auth_headers(source: SourceSettings) -> dict[str, str]:
    """The auth header of a source; the token is read once (from ``token`` or ``token_file``)."""
    if source.auth == "none":
        return {}
    if source.token is not None:
        token = source.token.get_secret_value()
    else:
        assert source.token_file is not None
        token = source.token_file.read_text().strip()
    if source.auth == "bearer":
        return {"Authorization": f"Bearer {token}"}
    return {source.api_key_header: token}


class SourceClient:
    """GETs for one source: shared pool, own limiter, own Retry-After gate, bounded retries."""

    def __init__(self, source: SourceSettings, session: aiohttp.ClientSession | None = None) -> None:
        self.source = source
        self.name = source.name
        self._own_session = session is None
        self.session = session or aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=source.max_connections, ttl_dns_cache=300),
            headers={"Accept": "application/json", "User-Agent": "streamscore-poller"},
            auto_decompress=True,
        )
        self.timeout = aiohttp.ClientTimeout(
            total=source.total_timeout_s, connect=source.connect_timeout_s, sock_read=source.read_timeout_s
        )
        period = source.rate_limit_burst / source.rate_limit_per_s
        self.limiter = AsyncLimiter(source.rate_limit_burst, period)
        self.gate = RetryAfterGate()
        self.headers = auth_headers(source)

    async def close(self) -> None:
        if self._own_session:
            await self.session.close()

    def _count(self, status: str) -> None:
        metrics.POLLER_REQUESTS.labels(source=self.name, status=status).inc()

    async def _throttle(self) -> None:
        waited = await self.gate.wait()
        if waited > 0:
            metrics.POLLER_THROTTLED.labels(source=self.name, cause="retry-after").inc(waited)
        start = time.monotonic()
        await self.limiter.acquire()
        waited = time.monotonic() - start
        if waited > 0.001:
            metrics.POLLER_THROTTLED.labels(source=self.name, cause="rate-limit").inc(waited)

    async def once(self, url: str, params: Mapping[str, str] | None = None) -> HttpResponse:
        """One attempt: gate, limiter, GET, classify."""
        await self._throttle()
        start = time.monotonic()
        try:
            async with self.session.get(
                url, params=params, headers=self.headers, timeout=self.timeout
            ) as resp:
                body = await resp.read()
                status, headers, final_url = resp.status, resp.headers, str(resp.url)
        except TimeoutError as exc:
            self._count("timeout")
            raise RetryableHttpError("timeout", f"GET {url} timed out") from exc
        except aiohttp.ClientConnectorError as exc:
            self._count("connect-error")
            raise RetryableHttpError("connect", f"GET {url}: {exc}") from exc
        except aiohttp.ClientError as exc:  # disconnected, payload cut, reset, ...
            self._count("disconnect")
            raise RetryableHttpError("disconnect", f"GET {url}: {type(exc).__name__}: {exc}") from exc
        elapsed = time.monotonic() - start
        self._count(str(status))
        if 200 <= status < 300:
            return HttpResponse(final_url, status, headers, body, elapsed)
        if status >= 500 or status in RETRYABLE_4XX:
            retry_after = parse_retry_after(headers.get("Retry-After"))
            if retry_after is not None:
                self.gate.push(min(retry_after, self.source.max_retry_after_s))
            reason = "429" if status == 429 else "5xx" if status >= 500 else str(status)
            raise RetryableHttpError(reason, f"GET {url}: HTTP {status}", status, retry_after)
        raise HttpRefused(url, status, body)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableHttpError) and exc.retry_after is not None:
            return 0.0  # the gate holds the next request until the server's deadline
        s = self.source
        return backoff_delay(state.attempt_number, s.backoff_initial_s, s.backoff_cap_s)

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        reason = exc.reason if isinstance(exc, RetryableHttpError) else "other"
        metrics.POLLER_RETRIES.labels(source=self.name, reason=reason).inc()

    async def get(self, url: str, params: Mapping[str, str] | None = None) -> HttpResponse:
        """GET with bounded retries; HttpGaveUp when they are spent, HttpRefused on a 4xx."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.source.retry_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(RetryableHttpError),
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self.once(url, params)
        except RetryableHttpError as exc:
            metrics.POLLER_FAILURES.labels(source=self.name, reason=exc.reason).inc()
            raise HttpGaveUp(url, self.source.retry_attempts, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover


def describe(exc: BaseException) -> dict[str, Any]:
    """Log fields of an HTTP failure."""
    return {
        "error": str(exc)[:300],
        "error_class": type(exc).__name__,
        "status": getattr(exc, "status", None),
    }
