"""The sink on the real stack: predictions in Kafka end in MongoDB once per (record, model version).

One run of ``streamscore sink`` (child process, unique source, group and database) stores good
predictions, dead-letters bad bytes (stage ``decode``) and a document over MongoDB's 16 MiB limit
(stage ``sink-data``), survives the same predictions being fed a second time without a single
extra document, and leaves documents that mongosh — a client no one here wrote — reads the same.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.conftest import unique
from tests.integration.sink_support import (
    Predictions,
    SinkRun,
    collection,
    committed_all,
    dead_letters,
    mongosh_eval,
    prediction,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("stack"), pytest.mark.timeout(240)]
N = 300  # records; the first N_V2 also scored by model version 2
N_V2 = 100
WANTED_INDEXES = {
    "scored_at": [("scored_at", -1)],
    "event_time": [("event_time", -1)],
    "model_scored_at": [("model.name", 1), ("model.version", 1), ("scored_at", -1)],
    "record_id": [("record_id", 1)],
    "label_scored_at": [("label", 1), ("scored_at", -1)],
    "anomaly_scored_at": [("anomaly", 1), ("scored_at", -1)],
}


@pytest.fixture
def run(make_settings):
    settings = make_settings(unique("sink"))
    database = unique("sinkdb_")
    feed = Predictions(settings)
    sink = SinkRun(settings, database, unique("streamscore-sink-test-"))
    yield settings, feed, sink
    sink.stop()
    collection(database).database.client.drop_database(database)


def test_predictions_land_once_per_record_and_model_version_and_survive_a_second_feed(run):
    settings, feed, sink = run
    source = feed.source
    records = [prediction(source, i) for i in range(N)] + [prediction(source, i, "2") for i in range(N_V2)]
    good = [feed.encode(r) for r in records]
    huge = feed.encode(prediction(source, N + 1, reasons=["x" * (17 * 1024 * 1024)]))
    bad = [("txn_bad_magic", b"\x01garbage"), ("txn_bad_body", feed.codec.encode(records[0])[:9])]
    feed.send(good[:150] + bad[:1] + [huge] + good[150:] + bad[1:])
    coll = collection(sink.database)

    sink.start()
    wait_until("all documents", lambda: coll.count_documents({}) >= N + N_V2, 120, sink)
    wait_until("offsets committed", lambda: committed_all(settings, sink.group, feed.topic), 60, sink)
    assert coll.count_documents({}) == N + N_V2
    status, ready = sink.get("/readyz")
    assert status == 200, ready

    # one document per (record id, model version), with the deterministic _id and query shape
    ids = {d["_id"] for d in coll.find({}, {"_id": 1})}
    expected = {f"{source}:{r['record_id']}:fraud-gbt:{r['model_version']}" for r in records}
    assert ids == expected
    doc = coll.find_one({"_id": f"{source}:txn_000000000003:fraud-gbt:1"})
    assert doc is not None
    src = records[3]
    assert doc["model"] == {"name": "fraud-gbt", "version": "1", "variant": "primary"}
    assert doc["record_id"] == src["record_id"] and doc["anomaly"] is True
    assert doc["score"] == src["score"] and doc["reasons"] == ["amount_eur"]
    for name in ("event_time", "fetched_at", "scored_at"):
        assert doc[name] == src[name], name  # BSON dates, millisecond precision kept
    assert doc["fetched_at"] <= doc["stored_at"] <= datetime.now(UTC)
    assert doc["kafka"]["topic"] == feed.topic and doc["kafka"]["offset"] >= 0
    indexes = coll.index_information()
    for name, keys in WANTED_INDEXES.items():
        assert indexes.get(name, {}).get("key") == keys, (name, indexes)

    # the bad bytes and the oversized document are dead letters, bytes unchanged, nothing else is
    letters = dead_letters(settings, expected=3)
    by_key = {letter["key"]: letter for letter in letters}
    assert sorted(by_key) == [b"txn_000000000301", b"txn_bad_body", b"txn_bad_magic"], letters
    assert by_key[b"txn_bad_magic"]["stage"] == "decode"
    assert by_key[b"txn_bad_body"]["stage"] == "decode"
    assert by_key[b"txn_bad_magic"]["value"] == b"\x01garbage"
    oversize = by_key[b"txn_000000000301"]
    assert oversize["stage"] == "sink-data" and oversize["value"] == huge[1]
    assert "exceeds MongoDB's limit" in oversize["exception.message"]
    assert oversize["original.topic"] == feed.topic and oversize["record.id"] == "txn_000000000301"

    # the same predictions again (new offsets): every document rewritten, none added
    first_offsets = {d["_id"]: d["kafka"]["offset"] for d in coll.find({}, {"kafka": 1})}
    feed.send(good)
    wait_until(
        "second feed rewritten",
        lambda: all(d["kafka"]["offset"] != first_offsets[d["_id"]] for d in coll.find({}, {"kafka": 1})),
        120,
        sink,
    )
    wait_until("offsets committed again", lambda: committed_all(settings, sink.group, feed.topic), 60, sink)
    assert coll.count_documents({}) == N + N_V2
    assert len(dead_letters(settings, expected=3)) == 3
    assert sink.stop() == 0, sink.log()


def test_mongosh_reads_what_the_writer_stored(run):
    _, feed, sink = run
    records = [prediction(feed.source, i) for i in range(60)]
    records += [prediction(feed.source, i, "2") for i in range(30)]
    feed.send([feed.encode(r) for r in records])
    coll = collection(sink.database)
    sink.start()
    wait_until("documents", lambda: coll.count_documents({}) >= len(records), 90, sink)

    stored = {d["_id"]: d for d in coll.find({})}
    shown = mongosh_eval(
        sink.database,
        "print(EJSON.stringify(db.predictions.find({}).sort({_id: 1}).toArray(), {relaxed: false}))",
    )
    assert [d["_id"] for d in shown] == sorted(stored)
    for doc in shown:
        assert _aware(doc) == stored[doc["_id"]]

    # the documented query (docs/querying.md): anomalies in the last hour by model version
    by_version = mongosh_eval(sink.database, _anomalies_by_version_js())
    expected: dict[tuple[str, str], int] = {}
    for r in records:
        if r["anomaly"]:
            key = (r["model_name"], r["model_version"])
            expected[key] = expected.get(key, 0) + 1
    got = {(row["_id"]["name"], row["_id"]["version"]): row["anomalies"] for row in by_version}
    assert got == expected and len(got) == 2


def _anomalies_by_version_js() -> str:
    return """
    const since = new Date(Date.now() - 3600 * 1000);
    print(EJSON.stringify(db.predictions.aggregate([
      {$match: {anomaly: true, scored_at: {$gte: since}}},
      {$group: {_id: {name: "$model.name", version: "$model.version"}, anomalies: {$sum: 1}}},
      {$sort: {"_id.name": 1, "_id.version": 1}}
    ]).toArray()))
    """


def _aware(value: Any) -> Any:
    """EJSON dates come back naive (UTC); make them comparable to a tz-aware client's."""
    if isinstance(value, dict):
        return {k: _aware(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_aware(v) for v in value]
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
