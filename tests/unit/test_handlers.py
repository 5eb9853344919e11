"""The clean and score handlers: outputs, dead letters (stage, original bytes, headers), and a
property test that no JSON payload makes the clean handler raise."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.handlers import CleanHandler, Incoming, ScoreHandler
from streams.scoring import ModelSet
from streamscore.avro import AvroCodec
from streamscore.dlq import parse_headers
from streamscore.errors import RegistryUnavailable
from streamscore.settings import ProcessorSettings
from tests.unit.conftest_processor import MemoryRegistry, codecs, good_payload, raw_value

Sent = list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]] | None]]


class Collector:
    def __init__(self) -> None:
        self.sent: Sent = []

    def __call__(self, topic: str, key: bytes | None, value: bytes | None, headers: Any) -> None:
        self.sent.append((topic, key, value, headers))

    def to(self, topic: str) -> Sent:
        return [s for s in self.sent if s[0] == topic]


def msg(value: bytes | None, offset: int = 0, key: bytes | None = b"k", topic: str = "raw.demo") -> Incoming:
    return Incoming(topic, 0, offset, key, value, [("traceparent", b"00-abc")])


@pytest.fixture(scope="module")
def c() -> dict[str, AvroCodec]:
    return codecs(MemoryRegistry())


@pytest.fixture(scope="module")
def models() -> ModelSet:
    return ModelSet.load(
        ProcessorSettings(candidate_model="fraud:v2", candidate_share=0.5, shadow_model="fraud:v2")
    )


def cleaner(c: dict[str, AvroCodec]) -> CleanHandler:
    return CleanHandler("demo", c["raw"], c["clean"])


def test_clean_handler_emits_transactions_keyed_by_id(c: dict[str, AvroCodec]) -> None:
    out = Collector()
    batch = [msg(raw_value(c["raw"], good_payload(i), f"txn_{i:012d}"), offset=i) for i in range(5)]
    result = cleaner(c).handle(batch, out)
    assert (result.received, result.produced, result.letters) == (5, 5, [])
    sent = out.to("clean.demo")
    assert [k for _, k, _, _ in sent] == [f"txn_{i:012d}".encode() for i in range(5)]
    first = c["clean"].decode(sent[0][2])
    assert first["transaction_id"] == "txn_000000000000"
    assert first["trace_id"] == "trace-txn_000000000000"


def letters(
    out: Collector,
) -> list[tuple[bytes | None, bytes | None, dict[str, str], list[tuple[str, bytes]]]]:
    return [(k, v, parse_headers(h), h or []) for _, k, v, h in out.to("dlq.demo")]


@pytest.mark.parametrize(
    ("value", "stage"),
    [
        (None, "decode"),
        (b"", "decode"),
        (b"\x01\x00\x00\x00\x01garbage", "decode"),
        (b"\x00\x00\x00\x03\x99garbage", "decode"),  # unknown schema id
    ],
)
def test_undecodable_values_go_to_the_dlq_unchanged(
    c: dict[str, AvroCodec], value: bytes | None, stage: str
) -> None:
    out = Collector()
    result = cleaner(c).handle([msg(value, offset=7, key=b"kk")], out)
    assert result.produced == 0 and len(result.letters) == 1
    [(key, original, headers, raw_headers)] = letters(out)
    assert (key, original) == (b"kk", value)
    assert headers["stage"] == stage
    assert headers["original.topic"] == "raw.demo"
    assert headers["original.offset"] == "7"
    assert headers["exception.class"].endswith("DecodeError")
    assert ("traceparent", b"00-abc") in raw_headers  # original headers kept


def test_invalid_payloads_go_to_the_dlq_with_stage_validate(c: dict[str, AvroCodec]) -> None:
    out = Collector()
    bad = [
        raw_value(c["raw"], good_payload(1, amount=-3), "txn_1"),
        raw_value(c["raw"], "{not json", "txn_2"),
        raw_value(c["raw"], good_payload(3, currency="XXX"), "txn_3"),
    ]
    good = raw_value(c["raw"], good_payload(4), "txn_4")
    result = cleaner(c).handle([msg(v, offset=i) for i, v in enumerate([*bad, good])], out)
    assert result.produced == 1
    found = letters(out)
    assert [v for _, v, _, _ in found] == bad
    assert {h["stage"] for _, _, h, _ in found} == {"validate"}
    assert [h["record.id"] for _, _, h, _ in found] == ["txn_1", "txn_2", "txn_3"]
    assert "amount" in found[0][2]["exception.message"]


def test_a_transient_registry_error_propagates_for_a_batch_retry(c: dict[str, AvroCodec]) -> None:
    class DownRegistry(MemoryRegistry):
        def schema_by_id(self, schema_id: int) -> str | None:
            raise RegistryUnavailable("registry down")

    raw = AvroCodec(DownRegistry(), "raw.demo-value", c["raw"].schema)
    handler = CleanHandler("demo", raw, c["clean"])
    with pytest.raises(RegistryUnavailable):
        handler.handle([msg(raw_value(c["raw"], good_payload(1)))], Collector())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = list(good_payload())


@st.composite
def payloads(draw: st.DrawFn) -> str:
    """Arbitrary JSON: free-form values, or a served record with fields replaced/removed/added."""
    if draw(st.booleans()):
        value: Any = draw(json_values)
    else:
        value = good_payload(draw(st.integers(0, 10**6)))
        for field in draw(st.lists(st.sampled_from(FIELDS), max_size=4)):
            if draw(st.booleans()):
                value.pop(field, None)
            else:
                value[field] = draw(json_values)
        value.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=2)))
    return json.dumps(value, allow_nan=True)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(payloads() | st.text(max_size=30), min_size=1, max_size=5))
def test_any_payload_ends_in_clean_or_the_dlq_and_never_raises(
    c: dict[str, AvroCodec], texts: list[str]
) -> None:
    out = Collector()
    batch = [msg(raw_value(c["raw"], t, f"id{i}"), offset=i) for i, t in enumerate(texts)]
    result = cleaner(c).handle(batch, out)
    assert result.produced + len(result.letters) == len(batch)
    assert len(out.sent) == len(batch)  # exactly one output per input
    for _, _, value, _ in out.to("clean.demo"):
        txn = c["clean"].decode(value)
        assert txn["amount"] > 0 and math.isfinite(txn["amount_eur"])
        assert txn["channel"] in ("online", "pos", "atm")
    for _, value, headers, _ in letters(out):
        assert headers["stage"] in ("validate", "encode")
        assert value in [m.value for m in batch]


# --- score handler ---------------------------------------------------------------------------
def clean_values(c: dict[str, AvroCodec], n: int) -> list[bytes]:
    out = Collector()
    cleaner(c).handle([msg(raw_value(c["raw"], good_payload(i), f"txn_{i:012d}")) for i in range(n)], out)
    return [v for _, _, v, _ in out.to("clean.demo") if v is not None]


async def test_score_handler_predicts_every_record_with_model_and_variant(
    c: dict[str, AvroCodec], models: ModelSet
) -> None:
    handler = ScoreHandler("demo", c["clean"], c["prediction"], models)
    values = clean_values(c, 40)
    out = Collector()
    result = await handler.handle([msg(v, offset=i, topic="clean.demo") for i, v in enumerate(values)], out)
    assert (result.received, result.produced, result.letters) == (40, 40, [])
    preds = [c["prediction"].decode(v) for _, _, v, _ in out.to("predictions.demo")]
    shadow = [c["prediction"].decode(v) for _, _, v, _ in out.to("predictions-shadow.demo")]
    assert sorted(p["record_id"] for p in preds) == [f"txn_{i:012d}" for i in range(40)]
    assert {(p["variant"], p["model_version"]) for p in preds} == {("primary", "v1"), ("candidate", "v2")}
    assert {(p["variant"], p["model_version"]) for p in shadow} == {("shadow", "v2")}
    assert len(shadow) == 40
    for p in preds:
        assert p["label"] in ("fraud", "legit") and 0.5 <= p["confidence"] <= 1
        assert p["trace_id"] == f"trace-{p['record_id']}"
        assert p["scored_at"] >= p["fetched_at"]
    assert [k for _, k, _, _ in out.to("predictions.demo")] == [p["record_id"].encode() for p in preds]


async def test_score_failures_are_isolated_per_record(c: dict[str, AvroCodec], models: ModelSet) -> None:
    handler = ScoreHandler("demo", c["clean"], c["prediction"], ModelSet(models.primary, None, 0.0, None))
    values = clean_values(c, 4)
    batch = [msg(v, offset=i, topic="clean.demo") for i, v in enumerate([*values[:2], b"junk", *values[2:]])]
    real_predict = models.primary.predict
    runs: list[int] = []

    def flaky(features: np.ndarray) -> np.ndarray:
        runs.append(len(features))
        if len(features) > 1:
            raise RuntimeError("batch run failed")  # → row by row
        return np.array([np.nan]) if len(runs) == 2 else real_predict(features)  # 1st row: NaN

    handler.models.primary.predict = flaky  # type: ignore[method-assign]
    try:
        out = Collector()
        result = await handler.handle(batch, out)
    finally:
        handler.models.primary.predict = real_predict  # type: ignore[method-assign]
    dead = letters(out)
    assert [h["stage"] for _, _, h, _ in dead] == ["decode", "score"]
    assert dead[0][1] == b"junk"
    assert dead[1][1] == values[0] and dead[1][2]["model"] == "fraud:v1"
    assert result.produced == 3
    assert runs == [4, 1, 1, 1, 1]
