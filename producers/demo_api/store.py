"""The demo API's records: generated once, serialised once, sliced per page.

Record ``seq`` (1-based) is ``records[seq - 1]`` as JSON bytes. ``backlog`` records exist at start;
with ``rate_per_s`` > 0 more become visible as time passes (generated lazily, on the first request
that can see them), up to ``max_records``. Cursors are opaque tokens naming the last seq served.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from producers.demo_api.generator import generate
from streamscore.settings import DemoApiSettings


class BadCursor(ValueError):
    """A cursor token this API did not issue."""


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s:{seq}".encode()).decode().rstrip("=")


def decode_cursor(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        kind, _, value = text.partition(":")
        seq = int(value)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadCursor(token) from None
    if kind != "s" or seq < 0:
        raise BadCursor(token)
    return seq


class RecordStore:
    """Pre-serialised records and how many of them are visible now."""

    def __init__(self, settings: DemoApiSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.started = clock()
        self.limit = settings.max_records
        self.records: list[bytes] = []
        start = None
        interval = None
        if settings.rate_per_s > 0:
            interval = 1.0 / settings.rate_per_s
            start = datetime.fromtimestamp(self.started, UTC) - timedelta(seconds=settings.backlog * interval)
        self._source: Iterator[tuple[dict[str, Any], bool]] = generate(
            self.limit, settings.seed, dirty=settings.dirty, start=start, interval_s=interval
        )
        self._fill(self._cap(settings.backlog))

    def _cap(self, n: int) -> int:
        return n if self.limit is None else min(n, self.limit)

    def _fill(self, n: int) -> None:
        dumps = orjson.dumps
        append = self.records.append
        for record, _fraud in self._source:
            append(dumps(record))
            if len(self.records) >= n:
                break

    def available(self) -> int:
        """How many records exist now (generating the newly visible ones)."""
        s = self.settings
        n = s.backlog
        if s.rate_per_s > 0:
            n += int((self.clock() - self.started) * s.rate_per_s)
        n = self._cap(n)
        if n > len(self.records):
            self._fill(n)
        return len(self.records)

    def page(self, after: int, limit: int) -> tuple[list[bytes], int, int]:
        """(records after seq ``after``, the last seq included, records available)."""
        total = self.available()
        after = max(0, min(after, total))
        stop = min(after + limit, total)
        return self.records[after:stop], stop, total
