"""Fault 8: bad input, at the HTTP edge and on the raw topic, and a corrupted model file.

One poller, processor and sink run five sources at once:

- ``edge``: an API page mixing good records with wrong types (amount as an object, timestamp as a
  list, card_present "maybe", channel and currency as numbers), NaN / Infinity / -Infinity / 1e400
  amounts (the JSON scanner reads them as floats), a 1.2 MB record (over the poller's
  ``max_record_bytes``), a non-object, a record without id, and an id with a lone surrogate;
  a second page of good records follows.
- ``deep`` / ``binary`` / ``trunc``: a good page, then a page that cannot be parsed at all (a record
  nested 100 000 levels deep, non-UTF-8 bytes, a body cut in half).
- ``kafka``: ``raw.<source>`` written directly: garbage bytes, an unknown schema id, a truncated
  Avro body, invalid UTF-8 inside the Avro string, a tombstone, a value framed with the id of an
  incompatible schema (a producer that bypassed our contract), truncated / NaN / deeply nested /
  wrong-typed JSON payloads, a large but legal record, and good records. A producer that tries to
  register an incompatible schema for the subject is refused by the registry.

Asserts: every bad record ends in ``dlq.<source>`` at the stage that owns the rule (``extract``,
``encode``, ``http-parse``, ``decode``, ``validate``) with a message saying why; every good record is
in MongoDB once; nothing else is stored or dead-lettered; no process exits; the poller's
``/readyz`` names each stuck source with its parse error (an unparsable page is retried, never
skipped: skipping would drop the records on it).

A corrupted model file (one flipped byte) or an unreadable card stops ``streamscore process`` at
start with exit code 2 and a message naming the file and the setting (``streamscore run`` does not
restart a child that exits 2: a refusal, not a crash loop).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer

from streams.scoring import CANDIDATE, assign_variant
from streamscore.bootstrap import codec, prepare
from streamscore.kafka_config import producer_config
from streamscore.registry import SchemaRegistry
from streamscore.settings import REPO_ROOT, load_settings
from streamscore.topics import raw_topic
from tests.faults import evil_api
from tests.faults.conftest_faults import make_pipeline, report
from tests.faults.harness import PY, Pipeline, PipelineConfig, free_port
from tests.unit.conftest_processor import good_payload

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]
__all__ = ["make_pipeline"]

SHARE = PipelineConfig().candidate_share


def good(rid: str, **changes: Any) -> dict[str, Any]:
    return good_payload(1, **changes) | {"id": rid}


def literal(rid: str, amount_text: str) -> bytes:
    """A record whose amount is a JSON-ish literal (NaN, Infinity, 1e400) spliced in as text."""
    return json.dumps(good(rid, amount=0)).replace('"amount": 0', f'"amount": {amount_text}').encode()


def build_pages() -> tuple[dict[str, list[bytes]], dict[str, dict[str, Any]]]:
    """Pages per source kind, and what must happen: good ids, dead letters by key and stage."""
    edge_bad_validate = {
        "e-wt-amount": good("e-wt-amount", amount={"x": 1}),
        "e-wt-time": good("e-wt-time", timestamp=[1]),
        "e-wt-present": good("e-wt-present", card_present="maybe"),
        "e-wt-channel": good("e-wt-channel", channel=5),
        "e-wt-currency": good("e-wt-currency", currency=12),
    }
    edge_page0: list[Any] = [good(f"e-g{i}") for i in range(1, 6)]
    edge_page0 += list(edge_bad_validate.values())
    edge_page0 += [
        literal(f"e-{n}", t) for n, t in (("nan", "NaN"), ("inf", "Infinity"), ("ninf", "-Infinity"))
    ]
    edge_page0 += [literal("e-1e400", "1e400")]
    edge_page0 += [good("e-huge", merchant_id="x" * 1_200_000)]
    edge_page0 += [b'"not an object"', {"amount": 3, "currency": "EUR"}]
    edge_page0 += [json.dumps(good("x")).replace('"id": "x"', '"id": "\\ud800"').encode()]
    edge_page0 += [good(f"e-g{i}") for i in range(6, 11)]
    edge_page1 = [good(f"e-g{i}") for i in range(11, 21)]
    validate = [*edge_bad_validate, "e-nan", "e-inf", "e-ninf", "e-1e400"]
    deep = b'{"id":"d-6","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    binary = evil_api.page([good("b-6")], 2).replace(
        b'"customer_id": "cus_00042"', b'"customer_id": "\xff\xfe"'
    )
    trunc = evil_api.page([good(f"t-{i}") for i in range(6, 11)], 2)
    pages = {
        "edge": [evil_api.page(edge_page0, 1), evil_api.page(edge_page1, 2)],
        "deep": [evil_api.page([good(f"d-{i}") for i in range(1, 6)], 1), evil_api.page([deep], 2)],
        "binary": [evil_api.page([good(f"b-{i}") for i in range(1, 6)], 1), binary],
        "trunc": [evil_api.page([good(f"t-{i}") for i in range(1, 6)], 1), trunc[: len(trunc) // 2]],
        "kafka": [],
    }
    expect: dict[str, dict[str, Any]] = {
        "edge": {
            "good": [f"e-g{i}" for i in range(1, 21)],
            "dead": dict.fromkeys(validate, "validate") | {"e-huge": "extract"},
            "keyless": {"extract": 2, "encode": 1},
        },
        "deep": {"good": [f"d-{i}" for i in range(1, 6)], "dead": {}, "keyless": {"http-parse": 1}},
        "binary": {"good": [f"b-{i}" for i in range(1, 6)], "dead": {}, "keyless": {"http-parse": 1}},
        "trunc": {"good": [f"t-{i}" for i in range(1, 6)], "dead": {}, "keyless": {"http-parse": 1}},
    }
    return pages, expect


def kafka_records(settings: Any, source: str) -> tuple[list[tuple[str, bytes | None]], dict[str, Any]]:
    """(key, value) pairs for raw.<source>, and what must happen to them."""
    registry = prepare(settings, "test-faults", timeout_s=60)
    raw = codec(registry, settings, raw_topic(source))

    def record(rid: str, payload: str) -> bytes:
        fields = {"source": source, "record_id": rid, "fetched_at": datetime.now(UTC)}
        return raw.encode(fields | {"cursor": None, "payload": payload, "trace_id": f"trace-{rid}"})

    good_ids = [f"k-g{i}" for i in range(1, 6)] + ["k-large"]
    items: list[tuple[str, bytes | None]] = [
        (rid, record(rid, json.dumps(good(rid)))) for rid in good_ids[:-1]
    ]
    # large but legal: 600 KB in a field the cleaning rules do not keep
    items.append(("k-large", record("k-large", json.dumps(good("k-large", notes="m" * 600_000)))))
    valid = record("k-x", json.dumps(good("k-x")))
    bad_utf8 = record("k-bad-utf8", "PAYLOAD").replace(b"PAYLOAD", b"PAYLO\xff\xfe")
    other = {"type": "record", "name": "Other", "namespace": "test", "fields": [{"name": "x", "type": "int"}]}
    other_id = SchemaRegistry(settings.registry).schema_id(f"faults-other-{source}-value", other, True)
    foreign = b"\x00" + other_id.to_bytes(4, "big") + b"\x02"  # Other{x=1}, framed as usual
    decode = {
        "k-garbage": b"this is not avro",
        "k-unknown-id": b"\x00\x7f\xff\xff\xf0" + valid[5:],
        "k-trunc-avro": valid[: len(valid) // 2],
        "k-bad-utf8": bad_utf8,
        "k-tombstone": None,
        "k-foreign-schema": foreign,
    }
    validate = {
        "k-trunc-json": record("k-trunc-json", json.dumps(good("k-trunc-json"))[:40]),
        "k-nan": record("k-nan", literal("k-nan", "NaN").decode()),
        "k-deep": record("k-deep", "[" * 100_000 + "]" * 100_000),
        "k-wrong-types": record(
            "k-wrong-types", json.dumps(good("k-wrong-types", amount=[1], card_present=3))
        ),
        "k-long-id": record("k-long-id", json.dumps(good("k-long-id", merchant_id="m" * 600_000))),
    }
    items += list(decode.items()) + list(validate.items())
    dead = dict.fromkeys(decode, "decode") | dict.fromkeys(validate, "validate")
    return items, {"good": good_ids, "dead": dead, "keyless": {}}


def test_bad_input_ends_in_the_dlq_or_a_refusal_never_a_crash_or_a_drop(make_pipeline) -> None:
    p: Pipeline = make_pipeline()
    pages, expect = build_pages()
    names = {kind: f"{p.source}-{kind}" for kind in pages}
    sources = {kind: dict(p.source_settings, name=name) for kind, name in names.items()}
    settings = load_settings(
        sources=list(sources.values()),
        registry={"cache_dir": str(p.tmp / "schema-cache")},
        environment="test",
    )
    items, expect["kafka"] = kafka_records(settings, names["kafka"])
    refused = _incompatible_registration(settings, names["kafka"])
    producer = Producer(producer_config(settings, "test-faults"))
    for key, value in items:
        producer.produce(raw_topic(names["kafka"]), key=key.encode(), value=value)
    assert producer.flush(30) == 0

    started = time.monotonic()
    with evil_api.serving({names[k]: v for k, v in pages.items()}) as url:
        for kind, src in sources.items():
            src["url"] = f"{url}/{names[kind]}/transactions"
        for child in (p.poller, p.processor, p.sink):
            child.env["STREAMSCORE_SOURCES"] = json.dumps(list(sources.values()))
            child.start()
        stages = [p.poller, p.processor, p.sink]
        want_docs = {_doc_id(names[k], rid) for k, e in expect.items() for rid in e["good"]}

        def done() -> bool:
            if p.stored() < len(want_docs):
                return False
            letters = _letters(p, names)
            return all(_covered(letters[k], e) for k, e in expect.items())

        took = p.wait_until("every record stored or dead-lettered", done, 240, stages)
        time.sleep(3)  # anything late (a duplicate, a stray letter) shows up now
        letters = _letters(p, names)
        docs = {d["_id"] for d in p.documents()}
        poller_ready = p.poller.get("/readyz")
        processor_ready, sink_ready = p.processor.get("/readyz"), p.sink.get("/readyz")

    assert docs == want_docs, (
        f"missing {sorted(want_docs - docs)[:5]}, unexpected {sorted(docs - want_docs)[:5]}"
    )
    for kind, e in expect.items():
        got = letters[kind]
        keyed = {k: v for k, v in got.items() if k}
        assert set(keyed) == set(e["dead"]), (kind, sorted(set(keyed) ^ set(e["dead"])))
        for key, stage in e["dead"].items():
            assert {s for s, _ in keyed[key]} == {stage}, (kind, key, keyed[key])
            assert all(msg for _, msg in keyed[key]), (kind, key, "dead letter without a message")
        keyless = [s for s, _ in got.get("", [])]
        for stage, n in e["keyless"].items():
            assert keyless.count(stage) >= n, (kind, stage, keyless)
        assert set(keyless) <= set(e["keyless"]), (kind, keyless)
    messages = {m for k in ("deep", "binary", "trunc") for _, m in letters[k].get("", [])}
    assert any("nested too deeply" in m for m in messages), messages
    assert any("not UTF-8" in m for m in messages), messages
    assert any("exceeds max_record_bytes" in m for _, m in letters["edge"]["e-huge"])

    assert all(c.alive and c.starts == 1 for c in stages), [(c.name, c.exits) for c in stages]
    assert processor_ready[0] == 200, processor_ready
    assert sink_ready[0] == 200, sink_ready
    status, body = poller_ready
    failing = {n: c["detail"] for n, c in body["checks"].items() if not c["ok"]}
    assert status == 503 and set(failing) == {f"source:{names[k]}" for k in ("deep", "binary", "trunc")}, body
    assert "409" in refused, refused
    report(
        "bad input",
        settled_s=took,
        total_s=time.monotonic() - started,
        documents=len(docs),
        dead_letters=sum(len(v) for by_key in letters.values() for v in by_key.values()),
        poller_not_ready={n: d[:60] for n, d in failing.items()},
    )


def test_corrupted_model_or_card_is_refused_at_start_with_a_clear_message(
    stack: None, tmp_path: Path
) -> None:
    cases = {"flipped byte in model.onnx": "checksum mismatch", "card.json cut in half": "invalid card"}
    for case, expected in cases.items():
        models = tmp_path / case.replace(" ", "-").replace(".", "_")
        shutil.copytree(REPO_ROOT / "models", models)
        folder = models / "fraud" / "v1"
        target = folder / ("model.onnx" if "onnx" in case else "card.json")
        data = bytearray(target.read_bytes())
        if "onnx" in case:
            data[len(data) // 2] ^= 0xFF
        else:
            data = data[: len(data) // 2]
        target.write_bytes(bytes(data))
        env = dict(os.environ) | {
            "STREAMSCORE_PROCESSOR__MODELS_DIR": str(models),
            "STREAMSCORE_HEALTH__PROCESSOR_PORT": str(free_port()),
            "STREAMSCORE_SOURCES": json.dumps([{"name": "faultsmodel"}]),
            "STREAMSCORE_REGISTRY__CACHE_DIR": str(tmp_path / "cache"),
        }
        started = time.monotonic()
        out = subprocess.run(
            [PY, "-m", "streamscore.cli", "process"], env=env, capture_output=True, text=True, timeout=120
        )
        took = time.monotonic() - started
        assert out.returncode == 2, (case, out.returncode, out.stderr[-2000:])
        assert expected in out.stderr and "STREAMSCORE_PROCESSOR__PRIMARY_MODEL" in out.stderr, out.stderr
        assert str(target) in out.stderr, out.stderr
        assert "Traceback" not in out.stderr, out.stderr
        report("corrupted model", case=case, exit_code=out.returncode, refused_in_s=took)


def _incompatible_registration(settings: Any, source: str) -> str:
    """Try to register a schema incompatible with raw.<source>'s contract: the registry refuses."""
    incompatible = {"type": "record", "name": "RawRecord", "fields": [{"name": "payload", "type": "int"}]}
    body = {"schema": json.dumps(incompatible), "schemaType": "AVRO"}
    url = f"{settings.registry.url}/subjects/{raw_topic(source)}-value/versions"
    resp = httpx.post(
        url, json=body, headers={"Content-Type": "application/vnd.schemaregistry.v1+json"}, timeout=10
    )
    return f"{resp.status_code} {resp.text[:300]}"


def _doc_id(source: str, rid: str) -> str:
    version = "v2" if assign_variant(rid, SHARE) == CANDIDATE else "v1"
    return f"{source}:{rid}:fraud:{version}"


def _letters(p: Pipeline, names: dict[str, str]) -> dict[str, dict[str, list[tuple[str, str]]]]:
    """Per source kind: record key ('' when none) -> [(stage, exception message)]."""
    out: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for kind, name in names.items():
        by_key: dict[str, list[tuple[str, str]]] = {}
        for msg in p.read_topic(f"dlq.{name}"):
            headers = {k: (v or b"").decode("utf-8", "replace") for k, v in msg.headers() or []}
            key = (msg.key() or b"").decode("utf-8", "replace")
            by_key.setdefault(key, []).append(
                (headers.get("dlq.stage", "?"), headers.get("dlq.exception.message", ""))
            )
        out[kind] = by_key
    return out


def _covered(by_key: dict[str, list[tuple[str, str]]], e: dict[str, Any]) -> bool:
    keyless = [s for s, _ in by_key.get("", [])]
    return set(e["dead"]) <= set(by_key) and all(keyless.count(s) >= n for s, n in e["keyless"].items())
