"""Split a page body into records, keeping each record's JSON text exactly as received.

The body is walked with the standard library's C scanner (``json.JSONDecoder.scan_once``): the
records array at ``records_path`` is read element by element, so each record's payload is the
slice ``text[start:end]`` of the body, byte for byte (no re-serialisation: number formats, key
order, escapes and duplicate keys stay as the API sent them). Everything else in the body is
decoded normally, so a cursor or a ``has_more`` flag can be read from it. Any syntax error,
trailing garbage or a missing records path raises :class:`PageParseError`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

_DECODER = json.JSONDecoder()
_SCAN = _DECODER.scan_once  # type: ignore[attr-defined]
_WS = re.compile(r"[ \t\n\r]*")
_scanstring = json.decoder.scanstring  # type: ignore[attr-defined]


class PageParseError(ValueError):
    """The page body is not the JSON we expect."""


@dataclass(slots=True)
class Item:
    """One element of the records array: its decoded value and its exact text."""

    value: Any
    text: str


def split_path(path: str | None) -> tuple[str, ...]:
    return tuple(p for p in (path or "").split(".") if p)


def get_path(obj: Any, path: tuple[str, ...]) -> Any:
    """``obj[a][b]...`` for a dotted path; None when any step is missing."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
        if obj is None:
            return None
    return obj


def _ws(s: str, idx: int) -> int:
    return _WS.match(s, idx).end()  # type: ignore[union-attr]


def _value(s: str, idx: int) -> tuple[Any, int]:
    try:
        return _SCAN(s, idx)
    except StopIteration as stop:
        raise PageParseError(f"expected a JSON value at offset {stop.value}") from None
    except json.JSONDecodeError as exc:
        raise PageParseError(f"{exc.msg} at offset {exc.pos}") from None


def _array(s: str, idx: int) -> tuple[list[Item], int]:
    """The elements of the array at ``idx``; the hot loop of the poller, hence written flat."""
    items: list[Item] = []
    idx = _ws(s, idx + 1)
    if s.startswith("]", idx):
        return items, idx + 1
    append, scan, ws, size = items.append, _SCAN, _WS.match, len(s)
    while True:
        try:
            value, end = scan(s, idx)
        except (StopIteration, json.JSONDecodeError):
            _value(s, idx)  # raises PageParseError with the reason
            raise
        append(Item(value, s[idx:end]))
        c = s[end] if end < size else ""
        if c in " \t\r\n":
            end = ws(s, end).end()  # type: ignore[union-attr]
            c = s[end : end + 1]
        if c == ",":
            idx = end + 1
            if s[idx : idx + 1] in (" ", "\n", "\r", "\t"):
                idx = _ws(s, idx)
        elif c == "]":
            return items, end + 1
        else:
            raise PageParseError(f"expected ',' or ']' at offset {end}")


def _walk(s: str, idx: int, path: tuple[str, ...]) -> tuple[Any, list[Item] | None, int]:
    """Decode the value at ``idx``; the array at ``path`` (below it) is split into items."""
    idx = _ws(s, idx)
    if not path:
        if not s.startswith("[", idx):
            if s.startswith("null", idx):
                return None, [], idx + 4
            raise PageParseError(f"records are not an array (offset {idx})")
        items, end = _array(s, idx)
        return [i.value for i in items], items, end
    if not s.startswith("{", idx):
        value, end = _value(s, idx)
        return value, None, end
    obj: dict[str, Any] = {}
    found: list[Item] | None = None
    idx = _ws(s, idx + 1)
    if s.startswith("}", idx):
        return obj, None, idx + 1
    while True:
        if not s.startswith('"', idx):
            raise PageParseError(f"expected a key at offset {idx}")
        try:
            key, idx = _scanstring(s, idx + 1, True)
        except json.JSONDecodeError as exc:
            raise PageParseError(f"{exc.msg} at offset {exc.pos}") from None
        idx = _ws(s, idx)
        if not s.startswith(":", idx):
            raise PageParseError(f"expected ':' at offset {idx}")
        idx = _ws(s, idx + 1)
        if key == path[0]:
            value, found, idx = _walk(s, idx, path[1:])
        else:
            value, idx = _value(s, idx)
        obj[key] = value
        idx = _ws(s, idx)
        c = s[idx : idx + 1]
        if c == ",":
            idx = _ws(s, idx + 1)
        elif c == "}":
            return obj, found, idx + 1
        else:
            raise PageParseError(f"expected ',' or '}}' at offset {idx}")


def parse_page(body: bytes | str, records_path: tuple[str, ...]) -> tuple[Any, list[Item]]:
    """(decoded body, records) of a page; PageParseError when it does not parse."""
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PageParseError(f"body is not UTF-8: {exc}") from None
    else:
        text = body
    try:
        decoded, items, end = _walk(text, 0, records_path)
    except RecursionError:  # the C scanner recurses per nesting level; escaped and crashed the poller
        raise PageParseError("JSON nested too deeply") from None
    if _ws(text, end) != len(text):
        raise PageParseError(f"trailing data at offset {end}")
    if items is None:
        raise PageParseError(f"no records array at {'.'.join(records_path)!r}")
    return decoded, items


def record_time(value: Any) -> float | None:
    """Unix seconds of a record's timestamp in any served format (ISO, epoch s/ms, RFC 2822)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value) / 1000.0 if abs(value) > 1e11 else float(value)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        return record_time(float(text))
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            parsed = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()
