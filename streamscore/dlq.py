"""The dead-letter contract: original bytes unchanged, context in headers.

Header names follow Kafka Connect's idea (``__connect.errors.*``) under our own prefix ``dlq.``:
original topic/partition/offset, stage, exception class, message, truncated stack, timestamp,
attempt count, and the record id where known. Every stage builds its letters here.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from streamscore import metrics

log = structlog.get_logger(__name__)

PREFIX = "dlq."
MAX_MESSAGE = 2000
MAX_STACK = 4000
STAGES = ("http-parse", "extract", "decode", "validate", "encode", "score", "sink-data")


@dataclass
class DeadLetter:
    """One record that cannot go on, with where it came from and why."""

    source: str
    stage: str
    error: BaseException | str
    key: bytes | None
    value: bytes | None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    record_id: str | None = None
    attempt: int = 1
    extra: dict[str, str] = field(default_factory=dict)

    def headers(self) -> list[tuple[str, bytes]]:
        if isinstance(self.error, BaseException):
            cls = type(self.error)
            exc_class = f"{cls.__module__}.{cls.__qualname__}"
            message = str(self.error) or repr(self.error)
            stack = "".join(traceback.format_exception(self.error))[-MAX_STACK:]
        else:
            exc_class, message, stack = "", self.error, ""
        values: dict[str, Any] = {
            "source": self.source,
            "stage": self.stage,
            "original.topic": self.topic,
            "original.partition": self.partition,
            "original.offset": self.offset,
            "record.id": self.record_id,
            "exception.class": exc_class,
            "exception.message": message[:MAX_MESSAGE],
            "exception.stacktrace": stack,
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "attempt": self.attempt,
        } | self.extra
        return [(PREFIX + k, str(v).encode()) for k, v in values.items() if v not in (None, "")]

    def record(self) -> None:
        """Count and log the letter (the log line carries id, stage and error)."""
        metrics.DLQ_RECORDS.labels(source=self.source, stage=self.stage).inc()
        log.warning(
            "dead_letter",
            source=self.source,
            stage=self.stage,
            record_id=self.record_id,
            topic=self.topic,
            partition=self.partition,
            offset=self.offset,
            error=str(self.error)[:300],
            error_class=type(self.error).__name__ if isinstance(self.error, BaseException) else "",
        )


def parse_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """The ``dlq.*`` headers of a message as a plain dict (prefix removed)."""
    out: dict[str, str] = {}
    for name, value in headers or ():
        if name.startswith(PREFIX):
            out[name[len(PREFIX) :]] = (value or b"").decode("utf-8", "replace")
    return out
