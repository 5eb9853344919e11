"""Pagination strategies, chosen by ``SourceSettings.pagination``, and the no-progress guard.

A *position* is a string (or None = the beginning) that the cursor store persists: the body
cursor, the next URL, the page number or the offset. A strategy turns a position into a request
and a received page into the next position:

- ``cursor``: the next cursor at ``cursor_path`` in the body, sent back as ``cursor_param``.
- ``link``:   the URL of ``Link: <...>; rel="next"`` (relative URLs resolved).
- ``page``:   ``page_param`` from ``first_page``; moves on after a full page only.
- ``offset``: ``offset_param``; moves on by ``page_size`` after a full page only.

A page shorter than ``page_size`` means caught up: the poller waits ``poll_interval_s`` and asks
the same position again (page/offset re-read the partial page; the poller skips ids it already
published from that position). :class:`NoProgressGuard` refuses a page that repeats the previous
one or a cursor that does not advance or comes back, so a misbehaving API cannot loop us forever.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

from producers.extract import get_path, split_path
from streamscore.settings import SourceSettings

_LINK = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]+)*)")
_PARAM = re.compile(r';\s*([A-Za-z0-9_*-]+)\s*=\s*(?:"([^"]*)"|([^;,\s]*))')


def parse_link_header(value: str | None, base: str = "") -> dict[str, str]:
    """rel → URL of an RFC 8288 ``Link`` header (first occurrence of each rel wins)."""
    links: dict[str, str] = {}
    for match in _LINK.finditer(value or ""):
        url, params = match.group(1).strip(), match.group(2)
        for name, quoted, bare in _PARAM.findall(params):
            if name.lower() != "rel":
                continue
            for rel in (quoted or bare).lower().split():
                links.setdefault(rel, urljoin(base, url) if base else url)
    return links


@dataclass(frozen=True)
class Request:
    url: str
    params: dict[str, str]


@dataclass(frozen=True)
class Step:
    """Where to go after a page: ``position`` and whether the API said there is no next page."""

    position: str | None
    end: bool


class Strategy:
    kind = ""

    def __init__(self, source: SourceSettings) -> None:
        self.source = source
        self.page_size = source.page_size

    def request(self, position: str | None) -> Request:
        raise NotImplementedError

    def step(self, position: str | None, body: Any, headers: Mapping[str, str], count: int, url: str) -> Step:
        raise NotImplementedError

    def _params(self, **extra: str) -> dict[str, str]:
        return {**self.source.params, self.source.limit_param: str(self.page_size), **extra}


class BodyCursor(Strategy):
    kind = "cursor"

    def __init__(self, source: SourceSettings) -> None:
        super().__init__(source)
        self.path = split_path(source.cursor_path)

    def request(self, position: str | None) -> Request:
        extra = {self.source.cursor_param: position} if position else {}
        return Request(self.source.url, self._params(**extra))

    def step(self, position: str | None, body: Any, headers: Mapping[str, str], count: int, url: str) -> Step:
        nxt = get_path(body, self.path)
        if nxt is None or nxt == "" or isinstance(nxt, bool | dict | list):
            return Step(position, True)
        return Step(str(nxt), False)


class LinkHeader(Strategy):
    kind = "link"

    def request(self, position: str | None) -> Request:
        if position:
            return Request(position, {})
        return Request(self.source.url, self._params())

    def step(self, position: str | None, body: Any, headers: Mapping[str, str], count: int, url: str) -> Step:
        nxt = parse_link_header(headers.get("Link"), base=url).get("next")
        if not nxt:
            return Step(position, True)
        return Step(nxt, False)


class PageNumber(Strategy):
    kind = "page"

    def _page(self, position: str | None) -> int:
        return self.source.first_page if position is None else int(position)

    def request(self, position: str | None) -> Request:
        return Request(self.source.url, self._params(**{self.source.page_param: str(self._page(position))}))

    def step(self, position: str | None, body: Any, headers: Mapping[str, str], count: int, url: str) -> Step:
        page = self._page(position)
        if count >= self.page_size:
            return Step(str(page + 1), False)
        return Step(str(page), True)


class OffsetLimit(Strategy):
    kind = "offset"

    def _offset(self, position: str | None) -> int:
        return 0 if position is None else int(position)

    def request(self, position: str | None) -> Request:
        params = self._params(**{self.source.offset_param: str(self._offset(position))})
        return Request(self.source.url, params)

    def step(self, position: str | None, body: Any, headers: Mapping[str, str], count: int, url: str) -> Step:
        offset = self._offset(position)
        if count >= self.page_size:
            return Step(str(offset + self.page_size), False)
        return Step(str(offset), True)


STRATEGIES: dict[str, type[Strategy]] = {s.kind: s for s in (BodyCursor, LinkHeader, PageNumber, OffsetLimit)}


def strategy_for(source: SourceSettings) -> Strategy:
    return STRATEGIES[source.pagination](source)


Fingerprint = tuple[str | None, str | None, int]


class NoProgressGuard:
    """Refuses pages that would loop: a repeated page, or a cursor that stalls or comes back.

    A *partial* page whose cursor stays put is an API saying "nothing newer yet" (possibly with
    a stray bad record): the poller waits ``poll_interval_s`` before asking again, so it cannot
    spin, and the guard lets it through. A *full* page that does not move the cursor would be
    fetched again at once, forever: that is refused.
    """

    def __init__(self, page_size: int, memory: int = 1000) -> None:
        self.page_size = page_size
        self.last_position: str | None = None
        self.last_fingerprint: Fingerprint | None = None
        self.recent: deque[str | None] = deque(maxlen=memory)

    def check(self, position: str | None, step: Step, fingerprint: Fingerprint) -> str | None:
        """Why this page makes no progress, or None when it is fine."""
        count = fingerprint[2]
        if count == 0:
            return None
        if (
            fingerprint[0] is not None
            and fingerprint == self.last_fingerprint
            and position != self.last_position
        ):
            return f"page at {position!r} repeats the page at {self.last_position!r}"
        if step.end:
            return None
        if step.position == position:
            return f"cursor {position!r} did not advance" if count >= self.page_size else None
        if step.position in self.recent:
            return f"cursor {step.position!r} was already visited"
        return None

    def accept(self, position: str | None, fingerprint: Fingerprint) -> None:
        if fingerprint[2] == 0:
            return
        self.last_position = position
        self.last_fingerprint = fingerprint
        if position not in self.recent:
            self.recent.append(position)

    def reset(self) -> None:
        self.last_position = None
        self.last_fingerprint = None
        self.recent.clear()
