"""Command-line inputs of the analyst tools: window bounds, output formats, model references.

A bound is either an OFFSET (a bare non-negative integer) or a TIME:

- ISO 8601 (``2024-05-01``, ``2024-05-01T12:00``, ``2024-05-01T12:00:00+02:00``; no zone = UTC),
- ``now``, or relative to now: ``-90s``, ``-15m``, ``-1h``, ``-2d``, ``-1w`` (also ``1h ago``).

Times are compared with the Kafka record timestamp: ``--from`` is inclusive, ``--to`` exclusive.
A time later than now is refused (almost always a wrong year or zone; the replay stops at the
high-water marks taken at start anyway).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal

from streamscore.errors import StreamscoreError

_RELATIVE = re.compile(r"^\s*-?\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*(?:ago)?\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_MODEL_REF = re.compile(r"^([A-Za-z0-9_.\-]+):([A-Za-z0-9_.\-]+)$")


class BadInput(StreamscoreError):
    """An argument the user can fix; the CLI shows usage and exits 2 before writing anything."""


class Format(StrEnum):
    jsonl = "jsonl"
    csv = "csv"
    parquet = "parquet"


@dataclass(frozen=True)
class Bound:
    """One end of a window: a Kafka offset or a UTC time."""

    kind: Literal["offset", "time"]
    offset: int = 0
    time: datetime | None = None

    @property
    def ms(self) -> int:
        """The time as epoch milliseconds (time bounds only)."""
        assert self.time is not None
        return int(self.time.timestamp() * 1000)

    def __str__(self) -> str:
        return f"offset {self.offset}" if self.kind == "offset" else self.time.isoformat()  # type: ignore[union-attr]


def parse_time(text: str, now: datetime, option: str = "time") -> datetime:
    """A UTC datetime from ISO 8601, ``now`` or a relative form; BadInput otherwise or if future."""
    value = text.strip()
    if value.lower() == "now":
        when = now
    elif match := _RELATIVE.match(value):
        amount, unit = float(match.group(1)), _UNITS[match.group(2).lower()]
        when = now - timedelta(**{unit: amount})
    else:
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise BadInput(
                f"{option}: {text!r} is neither an offset, an ISO 8601 time, 'now' nor a relative "
                "time like -1h"
            ) from None
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    if when > now:
        raise BadInput(f"{option}: {when.isoformat()} is in the future (now is {now.isoformat()})")
    return when


def parse_bound(text: str, now: datetime, option: str) -> Bound:
    """An OFFSET (bare integer) or a TIME (see the module docstring)."""
    value = text.strip()
    if value.isdigit():
        return Bound("offset", offset=int(value))
    return Bound("time", time=parse_time(value, now, option))


def check_window(start: Bound | None, end: Bound | None) -> None:
    """BadInput when ``start`` is not before ``end`` (both of the same kind)."""
    if start is None or end is None or start.kind != end.kind:
        return
    before = start.offset < end.offset if start.kind == "offset" else start.ms < end.ms
    if not before:
        raise BadInput(f"--from ({start}) must be before --to ({end})")


def parse_model_ref(text: str) -> tuple[str, str]:
    """(name, version) of ``NAME:VERSION``."""
    match = _MODEL_REF.match(text.strip())
    if not match:
        raise BadInput(f"--model: {text!r} is not NAME:VERSION (e.g. fraud:v2)")
    return match.group(1), match.group(2)


def now_utc() -> datetime:
    return datetime.now(UTC)
