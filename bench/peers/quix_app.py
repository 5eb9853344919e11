"""The Quix Streams peer: raw → clean → score → clean/predictions/DLQ topics and MongoDB, one app.

Written the way a Quix Streams user would: a StreamingDataFrame per message (Quix has no
micro-batch operator, so each record gets its own ONNX run), branches with ``to_topic`` for the
clean, predictions and dead-letter outputs, and a :class:`BatchingSink` for MongoDB that Quix
flushes at each checkpoint before it commits (at-least-once). The per-record work is
:class:`bench.peers.work.Work`, the same as for every peer. ``commit_interval`` is 0.5 s, the
same as the streamscore sink's batch window (Quix's default of 5 s would add seconds of latency).
Run by ``python -m bench.launch quix``; the consumer group is ``processor.app_id``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymongo.errors import BulkWriteError
from quixstreams import Application, message_context
from quixstreams.sinks import BatchingSink, SinkBatch

from bench.peers.work import Work, duplicates_only
from streams.handlers import BatchResult, Incoming
from streamscore.kafka_config import producer_config
from streamscore.settings import Settings


@dataclass
class Out:
    """What one raw record turned into."""

    clean: list[bytes] = field(default_factory=list)
    predictions: list[bytes] = field(default_factory=list)
    letters: list[tuple[bytes | None, list[tuple[str, bytes]]]] = field(default_factory=list)
    docs: list[dict[str, Any]] = field(default_factory=list)


class MongoSink(BatchingSink):
    """Inserts a checkpoint's documents with one unordered ``insert_many`` per partition."""

    def __init__(self, work: Work) -> None:
        super().__init__()
        self.work = work
        self.coll: Any = None

    def setup(self) -> None:
        self.coll = self.work.collection()

    def write(self, batch: SinkBatch) -> None:
        docs = [item.value for item in batch]
        if not docs:
            return
        self.work.stamp(docs)
        try:
            self.coll.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            if not duplicates_only(exc.details):
                raise
        self.work.stored(docs, BatchResult("peer", self.work.source))


def main(settings: Settings) -> None:
    work = Work(settings)
    conf = producer_config(settings, "quix")
    producer_extra = {
        k: conf[k] for k in ("acks", "enable.idempotence", "linger.ms", "batch.size", "compression.type")
    }
    app = Application(
        broker_address=settings.kafka.bootstrap_servers,
        consumer_group=work.group,
        auto_offset_reset="earliest",
        commit_interval=0.5,
        processing_guarantee="at-least-once",
        consumer_extra_config={"isolation.level": "read_committed"},
        producer_extra_config=producer_extra,
        auto_create_topics=False,
        use_changelog_topics=False,
        loglevel="WARNING",
    )
    raw = app.topic(work.raw_topic, key_deserializer="bytes", value_deserializer="bytes")
    outs = {
        name: app.topic(name, key_serializer="bytes", value_serializer="bytes")
        for name in (work.clean_topic, work.predictions_topic, f"dlq.{work.source}")
    }

    def process(value: bytes, key: bytes, timestamp: int, headers: Any) -> Out:
        work.arrived([timestamp])
        ctx = message_context()
        msg = Incoming(ctx.topic, ctx.partition, ctx.offset, key, value, list(headers or []))
        out = Out()

        def emit(topic: str, _key: bytes | None, data: bytes | None, hdrs: Any) -> None:
            if topic == work.clean_topic:
                out.clean.append(data or b"")
            elif topic == work.predictions_topic:
                out.predictions.append(data or b"")
            else:
                out.letters.append((data, list(hdrs or [])))

        docs, result = work.process([msg], emit)
        out.docs = docs
        for letter, _ in result.letters:
            letter.record()
        return out

    sdf = app.dataframe(raw).apply(process, metadata=True)
    sdf.apply(lambda o: o.clean, expand=True).to_topic(outs[work.clean_topic])
    sdf.apply(lambda o: o.predictions, expand=True).to_topic(outs[work.predictions_topic])
    (
        sdf.apply(lambda o: o.letters, expand=True)
        .set_headers(lambda value, _k, _t, _h: value[1])
        .apply(lambda letter: letter[0])
        .to_topic(outs[f"dlq.{work.source}"])
    )
    sdf.apply(lambda o: o.docs, expand=True).sink(MongoSink(work))
    app.run()
