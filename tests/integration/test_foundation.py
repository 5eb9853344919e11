"""Issue 2: the kernel against the real Kafka, Apicurio registry and FerretDB."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from streamscore.avro import AvroCodec, load_schema, split_header
from streamscore.kafka_config import admin_config, producer_config, reader_config
from streamscore.registry import SchemaRegistry, SchemaRejected
from streamscore.topics import CURSORS_TOPIC, TopicSpec, ensure_topics, pipeline_topics

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("stack")]


def test_topics_are_created_from_the_declared_table(make_settings):
    settings = make_settings()
    specs = pipeline_topics(settings)
    ensure_topics(settings)
    assert ensure_topics(settings) == []  # idempotent: nothing left to create
    metadata = AdminClient(admin_config(settings)).list_topics(timeout=10)
    for spec in specs:
        assert spec.name in metadata.topics, spec.name
        assert len(metadata.topics[spec.name].partitions) == spec.partitions
    source = settings.sources[0].name
    resources = [ConfigResource("topic", CURSORS_TOPIC), ConfigResource("topic", f"raw.{source}")]
    admin = AdminClient(admin_config(settings))
    configs = {r.name: f.result(timeout=10) for r, f in admin.describe_configs(resources).items()}
    assert configs[CURSORS_TOPIC]["cleanup.policy"].value == "compact"
    assert configs[f"raw.{source}"]["retention.ms"].value == str(7 * 24 * 3600 * 1000)


def test_message_round_trips_with_an_idempotent_producer(make_settings):
    settings = make_settings()
    topic = f"it.roundtrip.{uuid.uuid4().hex[:8]}"
    ensure_topics(settings, [TopicSpec(topic, 1, 3_600_000)])
    conf = producer_config(settings, "test")
    assert conf["enable.idempotence"] is True and conf["acks"] == "all"
    producer = Producer(conf)
    delivered = []
    for i in range(100):
        producer.produce(
            topic, key=f"k{i}", value=f"v{i}".encode(), on_delivery=lambda e, m: delivered.append(e)
        )
    assert producer.flush(15) == 0
    assert delivered == [None] * 100
    consumer = Consumer(reader_config(settings, "test"))
    consumer.assign([TopicPartition(topic, 0, 0)])
    got = []
    deadline = time.monotonic() + 20
    while len(got) < 100 and time.monotonic() < deadline:
        for msg in consumer.consume(200, timeout=1.0):
            assert msg.error() is None
            got.append((msg.key().decode(), msg.value().decode()))
    consumer.close()
    assert got == [(f"k{i}", f"v{i}") for i in range(100)]


def _transaction() -> dict:
    now = datetime.now(UTC).replace(microsecond=123000)
    return {
        "transaction_id": "txn_000000000001",
        "source": "transactions",
        "customer_id": "cus_00001",
        "customer_country": "DE",
        "merchant_id": None,
        "merchant_category": "grocery",
        "amount": 12.5,
        "currency": "EUR",
        "amount_eur": 12.5,
        "country": "DE",
        "channel": "pos",
        "card_present": True,
        "event_time": now,
        "fetched_at": now,
        "trace_id": uuid.uuid4().hex,
        "imputed_fields": ["card_present"],
    }


def test_schema_registers_and_confluent_framed_value_round_trips(make_settings):
    settings = make_settings()
    registry = SchemaRegistry(settings.registry)
    subject = f"it-{uuid.uuid4().hex[:8]}-value"
    codec = AvroCodec(registry, subject, load_schema("Transaction"))
    record = _transaction()
    data = codec.encode(record)
    schema_id, _ = split_header(data)
    assert data[0] == 0 and schema_id == codec.schema_id
    assert subject in registry.subjects()
    # a fresh client (cold caches) decodes it through the registry
    fresh = AvroCodec(
        SchemaRegistry(settings.registry.model_copy(update={"cache_dir": settings.registry.cache_dir / "x"})),
        subject,
        load_schema("Transaction"),
    )
    assert fresh.decode(data) == record


def test_registry_refuses_an_incompatible_change_under_backward(make_settings):
    settings = make_settings()
    registry = SchemaRegistry(settings.registry)
    subject = f"it-{uuid.uuid4().hex[:8]}-value"
    v1 = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"}]}
    registry.set_compatibility(subject, "BACKWARD")
    registry.schema_id(subject, v1, register=True)
    # adding a field without a default: new readers cannot read old data
    v2_bad = {"type": "record", "name": "R", "fields": [*v1["fields"], {"name": "b", "type": "int"}]}
    assert registry.is_compatible(subject, json.dumps(v2_bad)) is False
    with pytest.raises(SchemaRejected) as refused:
        registry.schema_id(subject, v2_bad, register=True)
    assert refused.value.status == 409
    v2_ok = {
        "type": "record",
        "name": "R",
        "fields": [*v1["fields"], {"name": "b", "type": "int", "default": 0}],
    }
    assert registry.is_compatible(subject, json.dumps(v2_ok)) is True


async def test_document_round_trips_through_the_mongodb_wire_server(make_settings):
    from pymongo import AsyncMongoClient

    settings = make_settings()
    client: AsyncMongoClient = AsyncMongoClient(
        settings.mongo.url.get_secret_value(), serverSelectionTimeoutMS=5000
    )
    db = client[f"it_{uuid.uuid4().hex[:8]}"]
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        doc = {"_id": "transactions:txn_1:m:1", "score": 0.25, "at": now, "reasons": ["a", "b"]}
        await db.preds.insert_one(doc)
        back = await db.preds.find_one({"_id": doc["_id"]})
        assert back is not None
        assert back["score"] == 0.25 and back["reasons"] == ["a", "b"]
        assert back["at"].replace(tzinfo=UTC) == now
    finally:
        await client.drop_database(db.name)
        await client.close()
