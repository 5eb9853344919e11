"""Issue 7: rescore a window of clean records with another model version (real Kafka + registry)."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from statistics import fmean

import pytest
from confluent_kafka import Consumer, TopicPartition
from typer.testing import CliRunner

from streams.features import feature_matrix, feature_row
from streams.scoring import Scorer
from streams.training import train
from streamscore.avro import AvroCodec
from streamscore.cli import app
from streamscore.kafka_config import reader_config
from streamscore.registry import SchemaRegistry
from streamscore.topics import clean_topic, ensure_topics, predictions_topic, shadow_topic
from tests.integration.conftest_analyst import analyst_settings, cli_env, ms, produce, read_topic, transaction

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("stack")]
runner = CliRunner()
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
FROM, TO = BASE + timedelta(seconds=5), BASE + timedelta(seconds=25)


def _baseline(txn: dict, score: float, version: str = "v1") -> dict:
    return {
        "record_id": txn["transaction_id"],
        "source": txn["source"],
        "event_time": txn["event_time"],
        "model_name": "fraud",
        "model_version": version,
        "variant": "primary",
        "score": score,
        "label": "fraud" if score >= 0.5 else "legit",
        "confidence": max(score, 1 - score),
        "low_confidence": 0.4 <= score <= 0.6,
        "anomaly": score >= 0.9,
        "reasons": [],
        "customer_id": txn["customer_id"],
        "amount_eur": txn["amount_eur"],
        "fetched_at": txn["fetched_at"],
        "scored_at": txn["fetched_at"],
        "trace_id": txn["trace_id"],
    }


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, stack):
    """Clean records at BASE + i s (i < 30) and primary (fraud:v1) predictions of all but two of
    them, plus a decoy prediction by another version; models v1 and v2 trained small into tmp."""
    tmp = tmp_path_factory.mktemp("rescore")
    for version in ("v1", "v2"):
        train(version, tmp / "models", n=3000, seed=7)
    source = f"rs{uuid.uuid4().hex[:10]}"
    settings = analyst_settings(
        tmp, source, processor={"models_dir": str(tmp / "models"), "primary_model": "fraud:v1"}
    )
    ensure_topics(settings)
    registry = SchemaRegistry(settings.registry)
    clean_codec = AvroCodec.for_topic(registry, clean_topic(source), "Transaction")
    pred_codec = AvroCodec.for_topic(registry, predictions_topic(source), "Prediction")
    txns = [transaction(i, source, BASE + timedelta(seconds=i)) for i in range(30)]
    produce(
        settings,
        clean_topic(source),
        [
            (t["transaction_id"], clean_codec.encode(t), i % 3, ms(t["event_time"]))
            for i, t in enumerate(txns)
        ],
    )
    rng = random.Random(11)
    base = {t["transaction_id"]: _baseline(t, rng.random()) for i, t in enumerate(txns) if i not in (7, 12)}
    decoy = _baseline(txns[9], 0.999, version="v0")
    values = [*base.values(), decoy]
    produce(
        settings,
        predictions_topic(source),
        [(p["record_id"], pred_codec.encode(p), 0, ms(p["event_time"]) + 500) for p in values],
    )
    window = [t for t in txns if FROM <= t["event_time"] < TO]
    return settings, window, base


def _run(settings, into: str) -> dict:
    args = ["rescore", "--model", "fraud:v2", "--from", FROM.isoformat(), "--to", TO.isoformat()]
    result = runner.invoke(app, [*args, "--into", into, "--json", "-q"], env=cli_env(settings))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _v2(settings, topic: str, expect: int) -> list[dict]:
    codec = AvroCodec.for_topic(SchemaRegistry(settings.registry), topic, "Prediction")
    return [
        p
        for p in (codec.decode(m.value()) for m in read_topic(settings, topic, expect))
        if p["model_version"] == "v2"
    ]


def test_rescore_writes_one_prediction_per_clean_record_and_an_exact_summary(pipeline):
    settings, window, base = pipeline
    summary = _run(settings, "predictions")
    source = settings.sources[0].name
    new = _v2(settings, predictions_topic(source), len(base) + 1 + len(window))

    assert sorted(p["record_id"] for p in new) == sorted(t["transaction_id"] for t in window)
    assert {(p["model_name"], p["model_version"], p["variant"]) for p in new} == {
        ("fraud", "v2", "candidate")
    }
    scorer = Scorer.load(settings.processor.models_dir, "fraud:v2", "test", settings.processor)
    direct = scorer.predict(feature_matrix([feature_row(t) for t in window])).tolist()
    by_id = {p["record_id"]: p for p in new}
    assert [by_id[t["transaction_id"]]["score"] for t in window] == pytest.approx(direct, abs=1e-6)

    both = [rid for rid in by_id if rid in base]
    c = summary["comparison"]
    assert (summary["records"], summary["produced"], summary["failed"]) == (len(window), len(window), 0)
    assert c["compared"] == len(both) == len(window) - 2
    assert c["agreement"] == pytest.approx(fmean(by_id[r]["label"] == base[r]["label"] for r in both))
    assert c["mean_shift"] == pytest.approx(fmean(by_id[r]["score"] - base[r]["score"] for r in both))
    assert c["new"]["anomalies"] == sum(p["anomaly"] for p in new)
    assert c["new"]["fraud"] == sum(p["label"] == "fraud" for p in new)
    assert c["baseline"]["ref"] == "fraud:v1"
    assert c["baseline"]["anomalies"] == sum(base[r]["anomaly"] for r in both)
    assert c["baseline"]["mean_score"] == pytest.approx(fmean(base[r]["score"] for r in both))


def test_rescore_into_shadow(pipeline):
    settings, window, _ = pipeline
    summary = _run(settings, "shadow")
    new = _v2(settings, shadow_topic(settings.sources[0].name), len(window))
    assert summary["produced"] == len(new) == len(window)
    assert {p["variant"] for p in new} == {"shadow"}


def _ends(settings) -> int:
    source = settings.sources[0].name
    consumer = Consumer(reader_config(settings, "test"))
    total = sum(
        consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        for topic in (predictions_topic(source), shadow_topic(source))
        for p in range(settings.kafka.topic_partitions)
    )
    consumer.close()
    return total


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "fraud:v9", "--from", "-2h"], "unknown model version fraud:v9"),
        (["--model", "fraud", "--from", "-2h"], "is not NAME:VERSION"),
        (["--model", "fraud:v2", "--from", "2999-01-01"], "in the future"),
        (["--model", "fraud:v2", "--from", "-1h", "--to", "-2h"], "must be before --to"),
        (["--model", "fraud:v2", "--from", "-1h", "--into", "elsewhere"], "--into must be"),
        (["--model", "fraud:v2", "--from", "-1h", "--source", "nope"], "--source must be one of"),
    ],
)
def test_bad_input_exits_non_zero_and_writes_nothing(pipeline, args, message):
    settings, _, _ = pipeline
    before = _ends(settings)
    result = runner.invoke(app, ["rescore", *args], env=cli_env(settings))
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert _ends(settings) == before
