"""Kafka client configuration, built in exactly one place.

Every producer is idempotent with ``acks=all``; every consumer commits only explicitly. The Faust
apps get their broker settings from :func:`faust_app_config` so the two client libraries
(confluent-kafka for our producers, aiokafka inside Faust) agree on servers and security.
"""

from __future__ import annotations

import socket
from typing import Any

from streamscore.settings import KafkaSettings, Settings


def _client_id(kafka: KafkaSettings, role: str) -> str:
    return f"{kafka.client_id_prefix}-{role}-{socket.gethostname()}"


def common_config(settings: Settings) -> dict[str, Any]:
    kafka = settings.kafka
    conf: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "security.protocol": kafka.security_protocol,
    }
    if kafka.sasl_mechanism:
        conf["sasl.mechanism"] = kafka.sasl_mechanism
        conf["sasl.username"] = kafka.sasl_username or ""
        conf["sasl.password"] = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
    return conf


def producer_config(
    settings: Settings, role: str, *, transactional_id: str | None = None, **overrides: Any
) -> dict[str, Any]:
    """Idempotent, acks=all, batched and compressed producer configuration."""
    kafka = settings.kafka
    conf = common_config(settings) | {
        "client.id": _client_id(kafka, role),
        "acks": "all",
        "enable.idempotence": True,
        "max.in.flight.requests.per.connection": 5,
        "linger.ms": kafka.linger_ms,
        "batch.size": kafka.batch_size_bytes,
        "compression.type": kafka.compression,
        "delivery.timeout.ms": 120_000,
        "queue.buffering.max.messages": 500_000,
    }
    if transactional_id:
        conf["transactional.id"] = transactional_id
    conf.update(overrides)
    return conf


def consumer_config(settings: Settings, group_id: str, role: str, **overrides: Any) -> dict[str, Any]:
    """Consumer that never auto-commits and starts from the earliest retained record."""
    conf = common_config(settings) | {
        "client.id": _client_id(settings.kafka, role),
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "partition.assignment.strategy": "cooperative-sticky",
    }
    conf.update(overrides)
    return conf


def reader_config(settings: Settings, role: str, **overrides: Any) -> dict[str, Any]:
    """A throwaway consumer for replay, tail and tools: a random group id, never commits."""
    import uuid

    return consumer_config(settings, f"_streamscore-{role}-{uuid.uuid4().hex[:12]}", role, **overrides)


def admin_config(settings: Settings) -> dict[str, Any]:
    return common_config(settings) | {"client.id": _client_id(settings.kafka, "admin")}


def faust_app_config(settings: Settings, app_id: str) -> dict[str, Any]:
    """Keyword arguments for ``faust.App`` (aiokafka driver) matching the settings above."""
    kafka = settings.kafka
    servers = [f"kafka://{s}" for s in kafka.bootstrap_servers.split(",")]
    conf: dict[str, Any] = {
        "id": app_id,
        "broker": servers,
        "broker_client_id": _client_id(kafka, app_id),
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        "topic_partitions": kafka.topic_partitions,
        "topic_replication_factor": kafka.replication_factor,
        "topic_allow_declare": False,
        "topic_disable_leader": True,
        "web_enabled": False,
        "store": "memory://",
    }
    if kafka.security_protocol != "PLAINTEXT":
        conf["broker_credentials"] = _faust_credentials(kafka)
    return conf


def _faust_credentials(kafka: KafkaSettings) -> Any:
    import faust

    password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
    return faust.SASLCredentials(
        username=kafka.sasl_username or "",
        password=password,
        mechanism=kafka.sasl_mechanism or "PLAIN",
        ssl_context=None,
    )
