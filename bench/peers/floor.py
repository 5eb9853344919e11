"""The floor the processor is compared with: the same work in one hand-written loop, no framework.

confluent-kafka ``consume(500)`` → fastavro decode of RawRecord → cleaning rules (pydantic
``Transaction``) → features → one ONNX run per batch → pydantic ``Prediction`` → fastavro encode →
produce (predictions or DLQ) → wait for the acks → commit. No intermediate ``clean`` topic, no
A/B or shadow. Run: ``python bench/peers/floor.py <raw topic> <out source> <group>``; stops after
``--idle-s`` without records.
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import time
from datetime import UTC, datetime

import fastavro
from confluent_kafka import Consumer, Producer, TopicPartition

from streams.domain import clean_raw
from streams.features import feature_matrix, feature_row
from streams.scoring import Scorer
from streamscore.avro import load_schema
from streamscore.contracts import Prediction
from streamscore.kafka_config import consumer_config, producer_config
from streamscore.registry import SchemaRegistry
from streamscore.settings import Settings, load_settings

HEADER = struct.Struct(">bI")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("raw_topic")
    parser.add_argument("out_source")
    parser.add_argument("group")
    parser.add_argument("--idle-s", type=float, default=5.0)
    args = parser.parse_args()
    settings = load_settings()
    registry = SchemaRegistry(settings.registry)
    raw_schema = fastavro.parse_schema(load_schema("RawRecord"))
    pred_schema = fastavro.parse_schema(load_schema("Prediction"))
    pred_id = registry.schema_id(f"predictions.{args.out_source}-value", load_schema("Prediction"), True)
    pred_header = HEADER.pack(0, pred_id)
    scorer = Scorer.load(
        settings.processor.models_dir, settings.processor.primary_model, "model", settings.processor
    )
    consumer = Consumer(consumer_config(settings, args.group, "floor"))
    producer = Producer(producer_config(settings, "floor"))
    consumer.subscribe([args.raw_topic])
    out_topic, dlq = f"predictions.{args.out_source}", f"dlq.{args.out_source}"
    last = time.monotonic()
    while time.monotonic() - last < args.idle_s:
        msgs = [m for m in consumer.consume(500, timeout=0.5) if m.error() is None]
        if not msgs:
            continue
        last = time.monotonic()
        good, rows = [], []
        for m in msgs:
            value = m.value()
            try:
                raw = fastavro.schemaless_reader(io.BytesIO(value[HEADER.size :]), raw_schema, None)
                txn = clean_raw(raw)  # type: ignore[arg-type]
                rows.append(feature_row(txn.model_dump()))
                good.append((m, txn))
            except Exception as exc:
                producer.produce(
                    dlq, key=m.key(), value=value, headers=[("dlq.stage", str(exc)[:100].encode())]
                )
        if good:
            features = feature_matrix(rows)
            scores = scorer.predict(features).tolist()
            scored_at = datetime.now(UTC)
            for (m, txn), outcome in zip(good, scorer.outcomes(scores, features), strict=True):
                assert not isinstance(outcome, Exception)
                pred = Prediction(
                    record_id=txn.transaction_id,
                    source=txn.source,
                    event_time=txn.event_time,
                    model_name=scorer.name,
                    model_version=scorer.version,
                    variant="primary",
                    score=outcome.score,
                    label=outcome.label,
                    confidence=outcome.confidence,
                    low_confidence=outcome.low_confidence,
                    anomaly=outcome.anomaly,
                    reasons=outcome.reasons,
                    customer_id=txn.customer_id,
                    amount_eur=txn.amount_eur,
                    fetched_at=txn.fetched_at,
                    scored_at=scored_at,
                    trace_id=txn.trace_id,
                )
                buf = io.BytesIO()
                buf.write(pred_header)
                fastavro.schemaless_writer(buf, pred_schema, pred.to_avro(), strict=True)
                producer.produce(out_topic, key=m.key(), value=buf.getvalue())
        if producer.flush(30) != 0:
            raise SystemExit("floor: outputs not acknowledged")
        ends: dict[tuple[str, int], int] = {}
        for m in msgs:
            ends[(m.topic(), m.partition())] = max(ends.get((m.topic(), m.partition()), -1), m.offset() + 1)
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in ends.items()], asynchronous=False)
    consumer.close()
    print(json.dumps({"floor": "done"}))


def run_e2e(settings: Settings, wait_s: float = 0.05) -> None:
    """The end-to-end floor (``python -m bench.launch floor``): raw → clean + predictions + MongoDB.

    One loop, no framework: ``consume(500)`` → :class:`bench.peers.work.Work` (the project's
    cleaning and scoring) → produce clean, predictions and dead letters → ``insert_many``
    (duplicates of a re-delivery refused, as the sink's insert-first mode) while Kafka acks
    → flush → commit. Runs until SIGTERM/SIGINT.
    """
    import signal

    from pymongo.errors import BulkWriteError

    from bench.peers.work import Work, duplicates_only
    from streams.handlers import Incoming

    work = Work(settings)
    coll = work.collection()
    consumer = Consumer(consumer_config(settings, work.group, "floor"))
    producer = Producer(producer_config(settings, "floor"))
    consumer.subscribe([work.raw_topic])
    stop: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda n, _: stop.append(n))

    def emit(topic: str, key: bytes | None, value: bytes | None, headers: object) -> None:
        while True:
            try:
                producer.produce(topic, value, key, headers=headers)  # type: ignore[arg-type]
                return
            except BufferError:
                producer.poll(0.05)

    while not stop:
        msgs = [m for m in consumer.consume(500, timeout=wait_s) if m.error() is None]
        if not msgs:
            continue
        work.arrived([m.timestamp()[1] for m in msgs])
        batch = [
            Incoming(m.topic(), m.partition(), m.offset(), m.key(), m.value(), list(m.headers() or []))
            for m in msgs
        ]
        docs, result = work.process(batch, emit)
        if docs:
            work.stamp(docs)
            try:
                coll.insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                if not duplicates_only(exc.details):
                    raise
        if producer.flush(30) != 0:
            raise SystemExit("floor: outputs not acknowledged")
        work.stored(docs, result)
        ends: dict[tuple[str, int], int] = {}
        for m in msgs:
            ends[(m.topic(), m.partition())] = max(ends.get((m.topic(), m.partition()), -1), m.offset() + 1)
        consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in ends.items()], asynchronous=False)
    consumer.close()


if __name__ == "__main__":
    main()
