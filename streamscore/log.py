"""structlog set-up: JSON in production, readable console in development, secrets redacted."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

SECRET_WORDS = ("password", "secret", "token", "api_key", "apikey", "authorization")


def redact_secrets(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in list(event):
        if any(word in key.lower() for word in SECRET_WORDS):
            event[key] = "***"
    return event


def configure_logging(fmt: str = "console", level: str = "INFO") -> None:
    """Route structlog and stdlib logging (Faust, aiokafka) through one renderer to stderr."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(getattr(logging, level), logging.INFO))
    for noisy in ("aiokafka", "faust", "mode", "httpx", "pymongo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
