"""Consumer lag per group, topic and partition, in messages and in seconds, from the broker.

Committed offsets come from ``AdminClient.list_consumer_group_offsets``, log-start and log-end
offsets from ``AdminClient.list_offsets`` (earliest/latest, read-uncommitted like Kafka's own
consumer-groups tool). Lag in seconds is the age of the oldest unconsumed record: a throwaway
reader (never commits) fetches the record at the next offset the group would consume and takes
``now - its timestamp``. Edge cases, chosen so the number means what an operator thinks it means:

- a partition the group never committed: it starts from the log start (``auto.offset.reset`` is
  ``earliest`` everywhere in streamscore), status ``no-commit``;
- an idle, caught-up partition: 0 messages and 0 s, whatever the age of the last commit;
- a committed offset that retention already deleted (committed < log start): counted from the log
  start, status ``expired``, ``expired`` = records lost before the group read them;
- a committed offset past the log end (topic recreated): counted from the log start, ``reset``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from confluent_kafka import (
    OFFSET_INVALID,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from streamscore.errors import TransientError
from streamscore.kafka_config import admin_config, consumer_config, reader_config
from streamscore.settings import Settings
from streamscore.topics import clean_topic, predictions_topic, raw_topic

log = structlog.get_logger(__name__)

PROCESSOR_GROUP = "streamscore-processor"
SINK_GROUP = "streamscore-sink"
READER_PREFIX = "_streamscore-"
Key = tuple[str, int]


@dataclass(frozen=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed_offset: int | None
    log_start_offset: int
    log_end_offset: int
    lag_messages: int
    lag_seconds: float | None  # None: the oldest record could not be read in time
    status: str  # ok | no-commit | expired | reset
    expired_messages: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def next_offset(committed: int | None, log_start: int, log_end: int) -> tuple[int, str, int]:
    """(offset the group consumes next, status, records deleted before it read them)."""
    if committed is None or committed < 0:
        return log_start, "no-commit", 0
    if committed < log_start:
        return log_start, "expired", log_start - committed
    if committed > log_end:
        return log_start, "reset", 0
    return committed, "ok", 0


def pipeline_groups(settings: Settings) -> dict[str, list[str]]:
    """The pipeline's consumer groups (the apps' ids) and the topics each must consume."""
    names = [s.name for s in settings.sources]
    processor = getattr(settings.processor, "app_id", PROCESSOR_GROUP)
    sink = getattr(settings.sink, "app_id", SINK_GROUP)
    kinds = getattr(settings.processor, "input_kinds", ["raw", "clean"])
    by_kind = {"raw": raw_topic, "clean": clean_topic}
    return {
        processor: [by_kind[k](n) for n in names for k in kinds],
        sink: [predictions_topic(n) for n in names],
    }


class LagProbe:
    """Measures lag with one admin client; a throwaway reader per call reads record timestamps.

    librdkafka aborts the whole process when a *group* admin request (ListConsumerGroupOffsets,
    DescribeConsumerGroups) times out (``rd_kafka_enq_once_del_source_return: Assertion
    `eonce->refcnt > 0'``, librdkafka issue 4605, reproduced with 2.16). So the pipeline groups,
    whose topics are known, are measured without them: committed offsets come from a consumer's
    OffsetFetch (``Consumer.committed``), which fails cleanly. Only other groups, whose topics must
    be discovered, use the group admin calls, with a long timeout (``discover_timeout_s``).
    """

    def __init__(
        self,
        settings: Settings,
        timeout_s: float = 10.0,
        read_timeout_s: float = 5.0,
        discover_timeout_s: float = 60.0,
    ) -> None:
        self.settings = settings
        self.timeout_s = timeout_s
        self.read_timeout_s = read_timeout_s
        self.discover_timeout_s = discover_timeout_s
        self.admin = AdminClient(admin_config(settings))
        self._offset_readers: dict[str, Consumer] = {}

    def close(self) -> None:
        for consumer in self._offset_readers.values():
            consumer.close()
        self._offset_readers.clear()

    # --- broker calls -------------------------------------------------------------------------
    def all_groups(self) -> list[str]:
        """Every consumer group on the cluster except streamscore's throwaway readers."""
        result = self.admin.list_consumer_groups(request_timeout=self.timeout_s).result()
        return sorted(g.group_id for g in result.valid if not g.group_id.startswith(READER_PREFIX))

    def partitions(self) -> dict[str, int]:
        """Topic → partition count."""
        meta = self.admin.list_topics(timeout=self.timeout_s)
        return {name: len(t.partitions) for name, t in meta.topics.items() if t.error is None}

    def committed_on(self, group: str, keys: Sequence[Key]) -> dict[Key, int]:
        """Committed offsets of ``group`` on ``keys`` via OffsetFetch (never joins the group)."""
        if not keys:
            return {}
        reader = self._offset_readers.get(group)
        if reader is None:  # group.id = the group; never subscribes, never commits
            # read_uncommitted: the last committed offsets at once, without waiting on (or
            # failing for) a transaction of the group that has not committed its offsets yet
            conf = consumer_config(
                self.settings, group, "lag-offsets", **{"isolation.level": "read_uncommitted"}
            )
            reader = self._offset_readers[group] = Consumer(conf)
        found = reader.committed([TopicPartition(t, p) for t, p in keys], timeout=self.timeout_s)
        return {
            (tp.topic, tp.partition): tp.offset
            for tp in found
            if tp.error is None and tp.offset != OFFSET_INVALID
        }

    def committed(self, group: str) -> dict[Key, int]:
        """Every committed offset of a group (discovery; a group admin call, see the class doc)."""
        request = [ConsumerGroupTopicPartitions(group)]
        fut = self.admin.list_consumer_group_offsets(request, request_timeout=self.discover_timeout_s)[group]
        out: dict[Key, int] = {}
        for tp in fut.result().topic_partitions or []:
            if tp.error is None and tp.offset != OFFSET_INVALID:
                out[(tp.topic, tp.partition)] = tp.offset
        return out

    def assigned_topics(self, group: str) -> set[str]:
        """Topics assigned to the group's live members (a group may consume before it commits)."""
        try:
            futures = self.admin.describe_consumer_groups([group], request_timeout=self.discover_timeout_s)
            desc = futures[group].result()
        except Exception:  # group unknown to this broker version/protocol: no live members
            return set()
        return {
            tp.topic
            for member in desc.members
            if member.assignment is not None
            for tp in member.assignment.topic_partitions
        }

    def offsets(self, keys: Iterable[Key], spec: OffsetSpec) -> dict[Key, int]:
        request = {TopicPartition(t, p): spec for t, p in keys}
        if not request:
            return {}
        futures = self.admin.list_offsets(request, request_timeout=self.timeout_s)
        return {(tp.topic, tp.partition): fut.result().offset for tp, fut in futures.items()}

    def oldest_timestamps(self, starts: dict[Key, int]) -> dict[Key, float | None]:
        """Timestamp (s) of the first readable record at or after each start; None if none in time.

        A partition whose readable end comes first (only transaction markers left) maps to
        ``now`` (age 0).
        """
        if not starts:
            return {}
        conf = reader_config(
            self.settings,
            "lag",
            **{
                "enable.partition.eof": True,
                "max.partition.fetch.bytes": 65536,
                "queued.max.messages.kbytes": 1024,
            },
        )
        consumer = Consumer(conf)
        found: dict[Key, float | None] = {}
        try:
            consumer.assign([TopicPartition(t, p, off) for (t, p), off in starts.items()])
            deadline = time.monotonic() + self.read_timeout_s
            while len(found) < len(starts) and time.monotonic() < deadline:
                for msg in consumer.consume(num_messages=500, timeout=0.2):
                    key = (msg.topic() or "", msg.partition() or 0)
                    if key in found or key not in starts:
                        continue
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            found[key] = time.time()
                        continue
                    ts_type, ts_ms = msg.timestamp()
                    found[key] = None if ts_type == TIMESTAMP_NOT_AVAILABLE else ts_ms / 1000.0
                    consumer.pause([TopicPartition(*key)])
        finally:
            consumer.close()
        return found

    # --- the measurement ----------------------------------------------------------------------
    def measure(self, groups: Sequence[str], with_seconds: bool = True) -> list[PartitionLag]:
        """One row per (group, topic, partition) the group consumes or has committed."""
        try:
            return self._measure(groups, with_seconds)
        except TransientError:
            raise
        except Exception as exc:  # KafkaException from any admin call: broker unreachable
            raise TransientError(f"cannot measure consumer lag: {exc}") from exc

    def _measure(self, groups: Sequence[str], with_seconds: bool) -> list[PartitionLag]:
        expected = pipeline_groups(self.settings)
        counts = self.partitions()
        committed: dict[str, dict[Key, int]] = {}
        keys_of: dict[str, list[Key]] = {}
        for group in groups:  # committed offsets before the log ends: committed <= log end
            if group in expected:
                topics = set(expected[group])
                keys_of[group] = sorted((t, p) for t in topics if t in counts for p in range(counts[t]))
                committed[group] = self.committed_on(group, keys_of[group])
                continue
            committed[group] = self.committed(group)
            topics = {t for t, _ in committed[group]} | self.assigned_topics(group)
            keys_of[group] = sorted((t, p) for t in topics if t in counts for p in range(counts[t]))
        keys = {k for ks in keys_of.values() for k in ks}
        starts = self.offsets(keys, OffsetSpec.earliest())
        ends = self.offsets(keys, OffsetSpec.latest())

        rows: list[tuple[str, Key, int | None, int, str, int]] = []
        for group in groups:
            for key in keys_of[group]:
                offset = committed[group].get(key)
                nxt, status, expired = next_offset(offset, starts[key], ends[key])
                rows.append((group, key, offset, nxt, status, expired))

        to_read = {key: nxt for _, key, _, nxt, _, _ in rows if nxt < ends[key]}
        stamps = self.oldest_timestamps(to_read) if with_seconds else {}
        now = time.time()
        out = []
        for group, key, offset, nxt, status, expired in rows:
            lag = max(0, ends[key] - nxt)
            seconds: float | None = 0.0
            if lag and with_seconds:
                ts = stamps.get(key)
                seconds = None if ts is None else round(max(0.0, now - ts), 3)
            elif lag:
                seconds = None
            out.append(
                PartitionLag(
                    group, key[0], key[1], offset, starts[key], ends[key], lag, seconds, status, expired
                )
            )
        return out


def report(rows: Sequence[PartitionLag]) -> dict[str, Any]:
    """The ``--json`` document: every row, and per group the total messages and the max seconds."""
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        g = groups.setdefault(row.group, {"lag_messages": 0, "lag_seconds": 0.0, "partitions": 0})
        g["lag_messages"] += row.lag_messages
        g["partitions"] += 1
        if row.lag_seconds is None:
            g["lag_seconds"] = None if row.lag_messages else g["lag_seconds"]
        elif g["lag_seconds"] is not None:
            g["lag_seconds"] = max(g["lag_seconds"], row.lag_seconds)
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "groups": groups,
        "partitions": [r.to_json() for r in rows],
    }


class BacklogCheck:
    """``ProgressWatch.backlog`` for a consumer group: True while the group has lag > 0.

    Never blocks its caller (the ``/readyz`` handler runs on the event loop): it answers the last
    known value and refreshes it in a background thread at most every ``ttl_s``. Before the first
    answer, and when the broker cannot be asked, it keeps the previous value (initially False,
    i.e. "no evidence of a backlog"; Kafka connectivity is a separate readiness check).
    """

    def __init__(self, settings: Settings, group: str, ttl_s: float = 5.0) -> None:
        self.group = group
        self.ttl_s = ttl_s
        self._settings = settings
        self._probe: LagProbe | None = None
        self._value = False
        self._checked = 0.0
        self._lock = threading.Lock()
        self._running = False

    def refresh(self) -> bool:
        """Ask the broker now (blocking); returns and caches the answer."""
        if self._probe is None:
            self._probe = LagProbe(self._settings, timeout_s=5.0)
        try:
            rows = self._probe.measure([self.group], with_seconds=False)
            self._value = any(r.lag_messages > 0 for r in rows)
        except TransientError as exc:
            log.warning("backlog_check_failed", group=self.group, error=str(exc)[:300])
        finally:
            self._checked = time.monotonic()
        return self._value

    def _refresh_in_background(self) -> None:
        try:
            self.refresh()
        finally:
            with self._lock:
                self._running = False

    def __call__(self) -> bool:
        with self._lock:
            stale = time.monotonic() - self._checked > self.ttl_s
            if stale and not self._running:
                self._running = True
                threading.Thread(target=self._refresh_in_background, daemon=True).start()
        return self._value


_CHECKS: dict[str, BacklogCheck] = {}


def group_has_backlog(settings: Settings, group: str, ttl_s: float = 5.0) -> bool:
    """Cached, non-blocking: does ``group`` have unconsumed records? (see :class:`BacklogCheck`)."""
    check = _CHECKS.get(group)
    if check is None:
        check = _CHECKS[group] = BacklogCheck(settings, group, ttl_s)
    return check()
