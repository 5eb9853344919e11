"""The per-record work every peer does, from the project's own code, so peers differ only in plumbing.

For a batch of ``raw.<source>`` messages: Avro decode and the cleaning rules
(:func:`streams.domain.clean_raw`), ``clean.<source>`` out, features and one ONNX run of the
primary model (:mod:`streams.scoring`), ``predictions.<source>`` out, and the MongoDB documents
(:func:`streams.sink.to_document`, same ``_id`` and fields as the sink). Records that fail go to
``dlq.<source>`` with the same headers as the processor's (:class:`streams.handlers.CleanHandler`).

The peers are one stage: one consumer reads ``raw`` and writes both topics and MongoDB, the shape
a user of each library would build; streamscore's processor cleans and scores in one agent too,
but its sink reads ``predictions`` back from Kafka (isolation of the sink from MongoDB, replays),
which costs one more Avro decode and Kafka hop per record. ``docs/benchmarks.md`` says so next to
the figures.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pymongo import MongoClient

from bench import stamps
from streams.domain import clean_raw
from streams.features import feature_matrix, feature_row
from streams.handlers import BatchResult, CleanHandler, Emit, Incoming
from streams.mongo_writer import INDEXES, write_concern
from streams.scoring import PRIMARY, ModelSet, prediction_value
from streams.sink import to_document
from streamscore import metrics
from streamscore.bootstrap import codec, prepare
from streamscore.contracts import Transaction
from streamscore.errors import TransientError
from streamscore.settings import Settings
from streamscore.topics import clean_topic, predictions_topic, raw_topic


class Work:
    """Clean → score → documents for batches of raw messages of one source."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.source = settings.sources[0].name
        registry = prepare(settings, "bench-peer", timeout_s=60)
        s = self.source
        self.cleaner = CleanHandler(
            s, codec(registry, settings, raw_topic(s)), codec(registry, settings, clean_topic(s))
        )
        self.prediction_codec = codec(registry, settings, predictions_topic(s))
        self.scorer = ModelSet.load(settings.processor).primary
        self.raw_topic = raw_topic(s)
        self.clean_topic = clean_topic(s)
        self.predictions_topic = predictions_topic(s)
        self.group = settings.processor.app_id
        self._scored = metrics.PROCESSOR_STAGE_LATENCY.labels(agent="score")

    def arrived(self, timestamps_ms: Sequence[int | float | None]) -> None:
        """Stamp "agent in": each raw record's age since its Kafka timestamp as the peer takes it."""
        now = time.time()
        recorder = stamps.RECORDER
        if recorder is not None:
            for ts in timestamps_ms:
                if ts:
                    recorder.observe("in.raw", now - ts / 1000, now)

    def process(self, batch: Sequence[Incoming], emit: Emit) -> tuple[list[dict[str, Any]], BatchResult]:
        """Emit clean records, predictions and dead letters; return the documents to store."""
        result = BatchResult("peer", self.source, received=len(batch))
        kept: list[tuple[Incoming, Transaction]] = []
        rows: list[dict[str, Any]] = []  # the Transaction fields of each kept record
        c = self.cleaner
        for msg in batch:
            stage, record_id, trace_id = "decode", None, None
            try:
                raw = c.raw_codec.decode(msg.value)
                record_id, trace_id = raw.get("record_id"), raw.get("trace_id")
                stage = "validate"
                txn = clean_raw(raw)
                stage = "encode"
                fields = txn.to_avro()
                emit(self.clean_topic, txn.transaction_id.encode(), c.clean_codec.encode(fields), None)
            except TransientError:
                raise
            except Exception as exc:
                c._dead(result, emit, msg, stage, exc, record_id, trace_id)
                continue
            kept.append((msg, txn))
            rows.append(fields)
        if not kept:
            return [], result
        features = feature_matrix([feature_row(r) for r in rows])
        scorer = self.scorer
        scores = scorer.predict(features).tolist()
        scored_at = datetime.now(UTC)
        docs: list[dict[str, Any]] = []
        for (msg, txn), row, outcome in zip(kept, rows, scorer.outcomes(scores, features), strict=True):
            try:
                if isinstance(outcome, Exception):
                    raise outcome
                prediction = prediction_value(row, scorer, PRIMARY, outcome, scored_at)
                value = self.prediction_codec.encode(prediction)
            except TransientError:
                raise
            except Exception as exc:
                c._dead(result, emit, msg, "score", exc, txn.transaction_id, txn.trace_id)
                continue
            emit(self.predictions_topic, txn.transaction_id.encode(), value, None)
            self._scored.observe((scored_at - row["fetched_at"]).total_seconds())
            docs.append(to_document(prediction, msg.topic, msg.partition, msg.offset, scored_at))
            result.produced += 1
        return docs, result

    def stored(self, docs: Sequence[dict[str, Any]], result: BatchResult) -> None:
        """Count a batch MongoDB acknowledged, as the sink does (fetch → ack per record)."""
        acked = datetime.now(UTC)
        e2e = metrics.END_TO_END.labels(source=self.source)
        for doc in docs:
            e2e.observe(max(0.0, (acked - doc["fetched_at"]).total_seconds()))
        metrics.SINK_WRITTEN.labels(source=self.source).inc(len(docs))
        for letter, _ in result.letters:
            letter.record()

    def stamp(self, docs: Sequence[dict[str, Any]]) -> None:
        """Set ``stored_at`` (the sink sets it when it builds the batch's documents)."""
        now = datetime.now(UTC)
        for doc in docs:
            doc["stored_at"] = now

    def collection(self) -> Any:
        """The predictions collection (sync client), with the sink's indexes created."""
        m = self.settings.mongo
        client: MongoClient[Any] = MongoClient(m.url.get_secret_value(), appname="bench-peer")
        coll = client[m.database].get_collection(m.collection, write_concern=write_concern(m.write_concern))
        for name, keys in INDEXES.items():
            coll.create_index(keys, name=name)
        return coll


def duplicates_only(details: Mapping[str, Any]) -> bool:
    """A BulkWriteError of an unordered insert that only refused re-deliveries (same ``_id``)."""
    errors = details.get("writeErrors", [])
    if details.get("writeConcernErrors"):
        return False
    return bool(errors) and all(e.get("code") == 11000 for e in errors)
