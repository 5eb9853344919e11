"""The processor's batch loop without a broker: retries instead of skipping, readiness while
failing, withheld offsets on stop, and the fused clean+score path."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError
from faust.transport.consumer import Consumer
from faust.types.tuples import TP, ConsumerMessage

from streams.batch_stream import withhold
from streams.handlers import BatchResult, CleanHandler, Incoming, ScoreHandler
from streams.processor import Processor
from streams.scoring import ModelSet
from streamscore.avro import AvroCodec
from streamscore.errors import RegistryUnavailable
from streamscore.producer import DeliveryBatch
from streamscore.settings import load_settings
from tests.unit.conftest_processor import MemoryRegistry, codecs, good_payload, raw_value


class FakeProducer:
    """Acknowledges every record at once; the deliveries of the first ``fail`` batches fail."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail

    def batch(self) -> DeliveryBatch:
        batch = DeliveryBatch(asyncio.get_running_loop())
        # marked on the batch itself: an id() set would doom a later batch that reuses the id
        batch.doomed = self.fail > 0  # type: ignore[attr-defined]
        self.fail = max(0, self.fail - 1)
        return batch

    def produce(self, batch: DeliveryBatch, topic: str, value: bytes | None, **kw: Any) -> None:
        batch._add()
        error = KafkaError(KafkaError._MSG_TIMED_OUT) if getattr(batch, "doomed", False) else None
        batch.on_delivery(error, None)


@pytest.fixture(scope="module")
def models() -> ModelSet:
    return ModelSet.load(load_settings().processor)


def processor(models: ModelSet, producer: FakeProducer) -> Processor:
    proc = Processor(load_settings(sources=[{"name": "demo"}], environment="test"), models)
    proc.producer = producer  # type: ignore[assignment]
    return proc


def message(offset: int, value: bytes = b"v") -> Any:
    return SimpleNamespace(topic="raw.demo", partition=0, offset=offset, key=b"k", value=value, headers=[])


async def test_a_failing_batch_is_retried_not_skipped_and_readiness_follows(models: ModelSet) -> None:
    producer = FakeProducer(fail=2)
    proc = processor(models, producer)
    calls = 0
    seen_not_ready = []

    async def handle(batch: Any, emit: Any) -> list[BatchResult]:
        nonlocal calls
        calls += 1
        seen_not_ready.append(proc._outputs_check()[0] is False)
        if calls == 1:
            raise RuntimeError("a bug outside any record")  # → BatchFailed → retried
        emit("clean.demo", b"k", b"v", None)  # 2nd attempt: delivery fails (transient) → retried
        return [BatchResult("clean", "demo", received=1, produced=1)]

    results = await asyncio.wait_for(proc.run_batch("clean-demo", [message(0)], handle), timeout=20)
    assert calls == 3
    assert results[0].produced == 1
    assert seen_not_ready[0] is False and any(seen_not_ready[1:])  # not ready while retrying
    assert proc._outputs_check() == (True, "ok")  # ready again once delivered


async def test_registry_outage_during_a_batch_is_retried(models: ModelSet) -> None:
    proc = processor(models, FakeProducer())
    attempts = 0

    async def handle(batch: Any, emit: Any) -> list[BatchResult]:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise RegistryUnavailable("registry down")
        return [BatchResult("clean", "demo", received=1)]

    await asyncio.wait_for(proc.run_batch("clean-demo", [message(0)], handle), timeout=20)
    assert attempts == 3


def test_withheld_messages_are_never_acked_to_the_consumer() -> None:
    """Faust's own Consumer.ack (what the batch iterator calls) skips a withheld message."""
    consumer = SimpleNamespace(
        app=SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True)),
        _committed_offset=defaultdict(lambda: None),
        _acked_index=defaultdict(set),
        _acked=defaultdict(list),
        _unacked_messages=set(),
        _n_acked=0,
        _waiting_for_ack=None,
    )
    tp = TP("raw.demo", 0)
    kept, released = (ConsumerMessage("raw.demo", 0, o, 0, 0, [], b"k", b"v", None, 1, 1, tp) for o in (1, 2))
    withhold([kept])
    assert [Consumer.ack(consumer, m) for m in (kept, released)] == [False, True]  # type: ignore[arg-type]
    assert consumer._acked[tp] == [2]


async def test_fused_path_cleans_and_scores_one_batch(models: ModelSet) -> None:
    c: dict[str, AvroCodec] = codecs(MemoryRegistry())
    clean = CleanHandler("demo", c["raw"], c["clean"])
    score = ScoreHandler("demo", c["clean"], c["prediction"], models)
    batch = [
        Incoming(
            "raw.demo", 0, i, f"txn_{i:012d}".encode(), raw_value(c["raw"], good_payload(i), f"txn_{i:012d}")
        )
        for i in range(20)
    ]
    bad = Incoming("raw.demo", 0, 20, b"bad", raw_value(c["raw"], good_payload(20, amount=None), "bad"))
    sent: list[tuple[str, bytes | None, bytes | None]] = []
    cleaned: list[tuple[Incoming, dict[str, Any]]] = []
    first = clean.handle([*batch, bad], lambda t, k, v, h: sent.append((t, k, v)), keep=cleaned)
    second = await score.score(cleaned, lambda t, k, v, h: sent.append((t, k, v)))
    assert (first.produced, len(first.letters), second.received, second.produced) == (20, 1, 20, 20)
    topics = [t for t, _, _ in sent]
    assert topics.count("clean.demo") == topics.count("predictions.demo") == 20
    assert [v for t, _, v in sent if t == "dlq.demo"] == [bad.value]


def test_process_command_refuses_to_start_with_a_tampered_model(tmp_path: Any) -> None:
    import shutil
    import subprocess
    import sys

    from streamscore.settings import REPO_ROOT

    shutil.copytree(REPO_ROOT / "models" / "fraud", tmp_path / "fraud")
    onnx = tmp_path / "fraud" / "v1" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-1])
    env = {"PATH": "/usr/bin:/bin", "STREAMSCORE_PROCESSOR__MODELS_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "streamscore.cli", "process"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "checksum mismatch" in done.stderr and str(onnx) in done.stderr


@pytest.mark.parametrize(
    ("processor_settings", "agents"),
    [
        ({}, {"clean-score-demo"}),
        ({"fused": False}, {"clean-demo", "score-demo"}),
        ({"stages": ["clean"]}, {"clean-demo"}),  # fused applies only with both stages here
        ({"stages": ["score"]}, {"score-demo"}),
        ({"fused": True, "stages": ["score"]}, {"score-demo"}),
    ],
)
def test_agents_follow_stages_and_fused(
    models: ModelSet, processor_settings: dict[str, Any], agents: set[str]
) -> None:
    settings = load_settings(sources=[{"name": "demo"}], processor=processor_settings)
    proc = Processor(settings, models)
    proc.add_source("demo", MemoryRegistry())
    assert {agent.name for agent in proc.app.agents.values()} == agents


def stopping_processor(models: ModelSet, grace: float) -> Processor:
    settings = load_settings(sources=[{"name": "demo"}], processor={"shutdown_grace_s": grace})
    proc = Processor(settings, models)
    proc.producer = FakeProducer()  # type: ignore[assignment]
    return proc


@pytest.mark.parametrize(("batch_takes", "withheld"), [(0.1, False), (5.0, True)])
async def test_a_stop_gives_the_batch_a_grace_period_then_withholds_it(
    models: ModelSet, batch_takes: float, withheld: bool
) -> None:
    proc = stopping_processor(models, grace=0.5)

    async def slow(batch: Any, emit: Any) -> list[BatchResult]:
        await asyncio.sleep(batch_takes)
        return [BatchResult("clean", "demo", received=1)]

    messages = [message(0), message(1)]
    agent = asyncio.ensure_future(proc.guarded_batch("clean-demo", messages, slow))
    await asyncio.sleep(0.05)
    agent.cancel()  # what a worker stop does to the agent
    with pytest.raises(asyncio.CancelledError):
        await agent
    assert [getattr(m, "acked", False) for m in messages] == [withheld, withheld]


async def test_an_unexpected_escape_withholds_and_crashes_the_worker(
    models: ModelSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = stopping_processor(models, grace=0.5)
    crashed: list[BaseException] = []

    async def crash(reason: BaseException) -> None:
        crashed.append(reason)

    async def broken_run_batch(*_: Any) -> list[BatchResult]:
        raise RuntimeError("escaped")

    monkeypatch.setattr(proc.app, "crash", crash)
    monkeypatch.setattr(proc, "run_batch", broken_run_batch)
    messages = [message(0)]
    with pytest.raises(RuntimeError):
        await proc.guarded_batch("clean-demo", messages, None)  # type: ignore[arg-type]
    assert messages[0].acked is True
    assert [str(e) for e in crashed] == ["escaped"]
