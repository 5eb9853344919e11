"""Start-up shared by every process: topics exist, contracts are registered, infra answers.

When Kafka or the registry is down at start, processes wait and retry with backoff (logging each
attempt) instead of crashing; a configuration error stops them at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import structlog

from streamscore import metrics
from streamscore.avro import AvroCodec, load_schema, subject_for
from streamscore.errors import RegistryUnavailable, TransientError
from streamscore.registry import SchemaRegistry
from streamscore.settings import Settings
from streamscore.topics import (
    clean_topic,
    ensure_topics,
    predictions_topic,
    raw_topic,
    shadow_topic,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")


def topic_contracts(settings: Settings) -> dict[str, str]:
    """Topic name → Avro contract name, for every configured source."""
    table: dict[str, str] = {}
    for source in settings.sources:
        table[raw_topic(source.name)] = "RawRecord"
        table[clean_topic(source.name)] = "Transaction"
        table[predictions_topic(source.name)] = "Prediction"
        table[shadow_topic(source.name)] = "Prediction"
    return table


def wait_for(
    what: str,
    fn: Callable[[], T],
    component: str,
    timeout_s: float | None = None,
    initial: float = 0.5,
    cap: float = 10.0,
) -> T:
    """Call ``fn`` until it stops raising TransientError; exponential backoff, optional deadline."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    delay = initial
    attempt = 1
    while True:
        try:
            return fn()
        except TransientError as exc:
            metrics.TRANSIENT_ERRORS.labels(component=component, kind=what).inc()
            if deadline is not None and time.monotonic() + delay > deadline:
                raise
            log.warning(
                "waiting_for_dependency", what=what, attempt=attempt, error=str(exc), retry_in_s=delay
            )
            time.sleep(delay)
            delay = min(cap, delay * 2)
            attempt += 1


def register_contracts(settings: Settings, registry: SchemaRegistry) -> dict[str, int]:
    """Register (or, in 'require' mode, look up) every topic's contract; subject → schema id."""
    register = settings.registry.mode == "register"
    reachable = True
    ids: dict[str, int] = {}
    for topic, contract in topic_contracts(settings).items():
        subject = subject_for(topic)
        if register and reachable:
            try:
                registry.set_compatibility(subject, "BACKWARD")
            except RegistryUnavailable:
                # registry down: a schema the disk cache knows was registered (with its level) by
                # an earlier start; schema_id falls back to that cache, or raises for a new one
                reachable = False
        ids[subject] = registry.schema_id(subject, load_schema(contract), register)
    return ids


def prepare(settings: Settings, component: str, timeout_s: float | None = None) -> SchemaRegistry:
    """Topics created, contracts registered; returns the registry client for codecs."""
    wait_for("kafka", lambda: ensure_topics(settings), component, timeout_s)
    registry = SchemaRegistry(settings.registry)
    ids = wait_for("registry", lambda: register_contracts(settings, registry), component, timeout_s)
    log.info("contracts_ready", component=component, subjects=len(ids))
    return registry


def codec(registry: SchemaRegistry, settings: Settings, topic: str) -> AvroCodec:
    """The codec of ``topic``'s contract."""
    contract = topic_contracts(settings)[topic]
    return AvroCodec.for_topic(registry, topic, contract, register=settings.registry.mode == "register")
