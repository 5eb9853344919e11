"""The pipeline's topics, declared once, and their creation through the admin API."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka.admin import AdminClient, NewTopic

from streamscore.errors import TransientError
from streamscore.kafka_config import admin_config
from streamscore.settings import Settings

DAY_MS = 24 * 3600 * 1000
CURSORS_TOPIC = "_streamscore.cursors"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    retention_ms: int
    compacted: bool = False

    def config(self) -> dict[str, str]:
        conf = {"retention.ms": str(self.retention_ms)}
        if self.compacted:
            # one record per page lands here: roll segments often so compaction keeps the topic
            # small and a restarting poller reads little
            conf["cleanup.policy"] = "compact"
            conf["retention.ms"] = "-1"
            conf["segment.ms"] = str(10 * 60 * 1000)
            conf["min.cleanable.dirty.ratio"] = "0.1"
        return conf


def raw_topic(source: str) -> str:
    return f"raw.{source}"


def clean_topic(source: str) -> str:
    return f"clean.{source}"


def predictions_topic(source: str) -> str:
    return f"predictions.{source}"


def shadow_topic(source: str) -> str:
    return f"predictions-shadow.{source}"


def dlq_topic(source: str) -> str:
    return f"dlq.{source}"


def pipeline_topics(settings: Settings) -> list[TopicSpec]:
    """Every topic of the configured sources, with partitions and retention."""
    n = settings.kafka.topic_partitions
    specs = [TopicSpec(CURSORS_TOPIC, 1, -1, compacted=True)]
    for source in settings.sources:
        specs += [
            TopicSpec(raw_topic(source.name), n, 7 * DAY_MS),
            TopicSpec(clean_topic(source.name), n, 7 * DAY_MS),
            TopicSpec(predictions_topic(source.name), n, 30 * DAY_MS),
            TopicSpec(shadow_topic(source.name), n, 30 * DAY_MS),
            TopicSpec(dlq_topic(source.name), 1, 30 * DAY_MS),
        ]
    return specs


def ensure_topics(
    settings: Settings, specs: list[TopicSpec] | None = None, timeout_s: float = 30.0
) -> list[str]:
    """Create the missing topics of ``specs``; return the names created. Idempotent."""
    specs = pipeline_topics(settings) if specs is None else specs
    admin = AdminClient(admin_config(settings))
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except Exception as exc:  # KafkaException: broker not reachable
        raise TransientError(f"cannot list topics: {exc}") from exc
    missing = [s for s in specs if s.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [
            NewTopic(
                s.name,
                num_partitions=s.partitions,
                replication_factor=settings.kafka.replication_factor,
                config=s.config(),
            )
            for s in missing
        ],
        request_timeout=timeout_s,
    )
    created = []
    for name, fut in futures.items():
        try:
            fut.result()
            created.append(name)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" in str(exc) or "already exists" in str(exc):
                continue
            raise TransientError(f"cannot create topic {name}: {exc}") from exc
    return created
