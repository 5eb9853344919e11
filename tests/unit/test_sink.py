"""The sink without services: document shape, error sorting, batch bookkeeping, stop safety."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
import pytest
from bson.raw_bson import RawBSONDocument
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    DuplicateKeyError,
    NotPrimaryError,
    OperationFailure,
    ServerSelectionTimeoutError,
    WTimeoutError,
)

from streams.mongo_writer import BatchWrite, MongoUnavailable, classify, is_transient, write_concern
from streams.sink import BatchAbandoned, Sink, document_id, to_document
from streamscore.avro import AvroCodec, load_schema
from streamscore.errors import ConfigError
from streamscore.settings import load_settings

T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def prediction(record_id: str = "txn_000000000001", **over: Any) -> dict[str, Any]:
    return {
        "record_id": record_id,
        "source": "transactions",
        "event_time": T0,
        "model_name": "fraud-gbt",
        "model_version": "1",
        "variant": "primary",
        "score": 0.93,
        "label": "fraud",
        "confidence": 0.93,
        "low_confidence": False,
        "anomaly": True,
        "reasons": ["amount"],
        "customer_id": "cus_00001",
        "amount_eur": 12.5,
        "fetched_at": T0 + timedelta(seconds=1),
        "scored_at": T0 + timedelta(seconds=2),
        "trace_id": "abc",
    } | over


def test_document_has_deterministic_id_model_subdocument_lineage_and_bson_dates():
    stored = T0 + timedelta(seconds=3)
    doc = to_document(prediction(), "predictions.transactions", 2, 41, stored)
    assert doc["_id"] == "transactions:txn_000000000001:fraud-gbt:1"
    assert doc["_id"] == document_id("transactions", "txn_000000000001", "fraud-gbt", "1")
    assert doc["model"] == {"name": "fraud-gbt", "version": "1", "variant": "primary"}
    assert doc["kafka"] == {"topic": "predictions.transactions", "partition": 2, "offset": 41}
    assert "model_name" not in doc and "model_version" not in doc
    back = bson.decode(bson.encode(doc))
    for name in ("event_time", "fetched_at", "scored_at", "stored_at"):
        assert isinstance(back[name], datetime)
    assert back["scored_at"] == (T0 + timedelta(seconds=2)).replace(tzinfo=None)


def test_write_concern_accepts_numbers_and_majority_but_refuses_unacknowledged():
    assert write_concern("majority").document == {"w": "majority"}
    assert write_concern("2").document == {"w": 2}
    with pytest.raises(ConfigError, match="WRITE_CONCERN"):
        write_concern("0")


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (AutoReconnect("connection reset"), True),
        (NotPrimaryError("not primary"), True),
        (ServerSelectionTimeoutError("no servers"), True),
        (WTimeoutError("wtimeout", 64), True),
        (OperationFailure("interrupted at shutdown", 11600), True),
        (OperationFailure("document failed validation", 121), False),
    ],
)
def test_errors_are_sorted_into_transient_and_data(exc, transient):
    assert is_transient(exc) is transient


def test_write_error_codes_classify_per_document():
    assert classify(10334) == "data"  # BSONObjectTooLarge
    assert classify(121) == "data"
    assert classify(11000) == "transient"  # upsert race on _id
    assert classify(None) == "transient"


class FakeCollection:
    """Records the requests (``+id`` insert, ``id`` upsert); raises the queued errors in turn."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls: list[list[str]] = []

    async def bulk_write(self, requests: list[Any], ordered: bool) -> None:
        assert ordered is False
        assert all(r._upsert for r in requests)
        self.calls.append([r._filter["_id"] for r in requests])
        if self.errors:
            raise self.errors.pop(0)

    async def insert_many(self, docs: list[Any], ordered: bool) -> None:
        assert ordered is False
        self.calls.append(["+" + d["_id"] for d in docs])
        if self.errors:
            raise self.errors.pop(0)


def raw_docs(n: int) -> list[RawBSONDocument]:
    return [RawBSONDocument(bson.encode({"_id": f"d{i}", "x": i})) for i in range(n)]


async def run_to_end(batch: BatchWrite) -> int:
    while True:
        try:
            return await batch.attempt()
        except MongoUnavailable:
            continue


async def test_bulk_upsert_rejects_data_errors_and_retries_only_transient_ones():
    error = BulkWriteError(
        {
            "writeErrors": [
                {"index": 1, "code": 10334, "errmsg": "too large"},
                {"index": 3, "code": 11000, "errmsg": "E11000 duplicate key"},
            ],
            "writeConcernErrors": [],
        }
    )
    coll = FakeCollection(error)
    batch = BatchWrite(coll, 64, to_replace=dict(enumerate(raw_docs(5))))  # type: ignore[arg-type]
    assert await run_to_end(batch) == 4
    assert coll.calls == [["d0", "d1", "d2", "d3", "d4"], ["d3"]]
    assert list(batch.rejected) == [1] and batch.rejected[1].code == 10334


async def test_write_concern_error_redoes_every_document_not_rejected():
    error = BulkWriteError(
        {
            "writeErrors": [{"index": 0, "code": 121, "errmsg": "failed validation"}],
            "writeConcernErrors": [{"code": 64, "errmsg": "waiting for replication timed out"}],
        }
    )
    coll = FakeCollection(error, AutoReconnect("reset"))
    batch = BatchWrite(coll, 64, to_replace=dict(enumerate(raw_docs(3))))  # type: ignore[arg-type]
    assert await run_to_end(batch) == 2
    assert coll.calls == [["d0", "d1", "d2"], ["d1", "d2"], ["d1", "d2"]]
    assert list(batch.rejected) == [0]


async def test_insert_first_upserts_only_duplicates_in_chunks():
    error = BulkWriteError(
        {
            "writeErrors": [
                {"index": 0, "code": 11000, "errmsg": "E11000 duplicate key"},
                {"index": 2, "code": 11000, "errmsg": "E11000 duplicate key"},
                {"index": 3, "code": 11000, "errmsg": "E11000 duplicate key"},
                {"index": 4, "code": 10334, "errmsg": "too large"},
                {"index": 5, "code": 6, "errmsg": "host unreachable"},
            ],
            "writeConcernErrors": [],
        }
    )
    coll = FakeCollection(error)
    batch = BatchWrite(coll, 2, to_insert=dict(enumerate(raw_docs(6))))  # type: ignore[arg-type]
    assert await run_to_end(batch) == 5
    assert coll.calls == [
        ["+d0", "+d1", "+d2", "+d3", "+d4", "+d5"],
        ["+d5"],
        ["d0", "d2"],
        ["d3"],
    ]
    assert list(batch.rejected) == [4]


async def test_a_non_transient_error_outside_a_bulk_result_is_raised():
    coll = FakeCollection(DuplicateKeyError("dup", 121))
    batch = BatchWrite(coll, 64, to_replace=dict(enumerate(raw_docs(1))))  # type: ignore[arg-type]
    with pytest.raises(DuplicateKeyError):
        await batch.attempt()


# --- Sink: decoding into documents and dead letters ------------------------------------------


class FakeRegistry:
    def schema_id(self, subject: str, schema: Any, register: bool) -> int:
        return 7

    def schema_by_id(self, schema_id: int) -> str | None:
        return None


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@pytest.fixture
def sink(tmp_path):
    settings = load_settings(sources=[{"name": "transactions"}], sink={"shutdown_grace_s": 0.2})
    codec = AvroCodec(FakeRegistry(), "predictions.transactions-value", load_schema("Prediction"))  # type: ignore[arg-type]
    s = Sink(settings, {"predictions.transactions": codec})
    s.writer.max_document_bytes = 4096
    yield s, codec
    s.dlq.close(0.1)


async def test_prepare_turns_bad_bytes_into_decode_letters_and_huge_documents_into_sink_data(sink):
    s, codec = sink
    topic = "predictions.transactions"
    good = codec.encode(prediction("txn_1"))
    huge = codec.encode(prediction("txn_2", reasons=["x" * 5000]))
    messages = [
        Msg(topic, 0, 10, b"txn_1", good),
        Msg(topic, 0, 11, b"txn_x", b"\x00\x00\x00\x00\x07garbage"),
        Msg(topic, 1, 12, b"txn_2", huge),
        Msg(topic, 1, 13, b"txn_3", None),
    ]
    out = await s._prepare(messages)  # type: ignore[arg-type]
    assert [d["_id"] for d in out.docs] == ["transactions:txn_1:fraud-gbt:1"]
    assert dict(out.docs[0]["kafka"]) == {"topic": topic, "partition": 0, "offset": 10}
    stages = [(letter.record_id, letter.stage, letter.offset) for letter in out.letters]
    assert stages == [("txn_x", "decode", 11), ("txn_2", "sink-data", 12), ("txn_3", "decode", 13)]
    assert out.letters[1].value == huge  # the original bytes, unchanged
    assert "exceeds MongoDB's limit of 4096 bytes" in str(out.letters[1].error)


def batch_events(n: int = 3) -> list[Msg]:
    return [Msg("predictions.transactions", 0, i, b"k", b"v") for i in range(n)]


def withheld(messages: list[Msg]) -> list[bool]:
    return [getattr(m, "acked", False) for m in messages]


async def test_cancel_during_an_unacknowledged_write_withholds_the_batch_from_the_commit(sink):
    s, _ = sink
    crashed: list[BaseException] = []

    async def crash(exc: BaseException) -> None:
        crashed.append(exc)

    s.crash = crash
    never = asyncio.Event()

    async def stuck(events: Any) -> None:
        await never.wait()

    s.process = stuck  # type: ignore[method-assign]
    events = batch_events()
    task = asyncio.ensure_future(s.handle(events))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert withheld(events) == [True, True, True]
    await asyncio.sleep(0)
    assert len(crashed) == 1  # not a stop: the worker restarts to re-read the withheld batch


async def test_cancel_during_a_write_that_finishes_within_the_grace_period_lets_faust_ack(sink):
    s, _ = sink
    finished: list[bool] = []

    async def slow(events: Any) -> None:
        await asyncio.sleep(0.1)
        finished.append(True)

    s.process = slow  # type: ignore[method-assign]
    events = batch_events()
    task = asyncio.ensure_future(s.handle(events))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished == [True] and withheld(events) == [False, False, False]


async def test_a_stop_during_a_failing_write_waits_the_grace_period_then_withholds(sink):
    s, _ = sink
    stopping = False
    s.stopping = lambda: stopping
    never = asyncio.Event()

    async def retrying(events: Any) -> None:
        await never.wait()

    s.process = retrying  # type: ignore[method-assign]
    events = batch_events()
    task = asyncio.ensure_future(s.handle(events))
    await asyncio.sleep(0.3)
    assert not task.done()  # no stop yet: the batch keeps being retried
    stopping = True
    started = asyncio.get_running_loop().time()
    await task  # returns: Faust's finally acks nothing, its wait_empty sees the batch settled
    assert asyncio.get_running_loop().time() - started >= 0.2
    assert withheld(events) == [True, True, True]


async def test_a_stop_during_a_write_that_then_succeeds_returns_normally(sink):
    s, _ = sink
    s.stopping = lambda: True
    finished: list[bool] = []

    async def slow(events: Any) -> None:
        await asyncio.sleep(0.1)
        finished.append(True)

    s.process = slow  # type: ignore[method-assign]
    events = batch_events()
    await s.handle(events)
    assert finished == [True] and withheld(events) == [False, False, False]


async def test_an_unexpected_error_in_a_batch_withholds_it_and_raises(sink):
    s, _ = sink

    async def broken(events: Any) -> None:
        raise RuntimeError("bug")

    s.process = broken  # type: ignore[method-assign]
    events = batch_events()
    with pytest.raises(BatchAbandoned, match="RuntimeError"):
        await s.handle(events)
    assert withheld(events) == [True, True, True]
