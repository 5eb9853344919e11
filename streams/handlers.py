"""The per-batch work of the clean and score agents, free of Faust so it is testable alone.

A handler takes a batch of :class:`Incoming` messages and an ``emit`` callable (topic, key,
value, headers) and emits, for each message, either its output or a dead letter to
``dlq.<source>`` (original key, original bytes, original headers + ``dlq.*`` context).
Per-record failures never raise; a :class:`TransientError` (registry down, …) does, so the
caller retries the whole batch without committing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import structlog

from streams.domain import clean_raw
from streams.features import feature_matrix, feature_row
from streams.scoring import (
    CANDIDATE,
    PRIMARY,
    SHADOW,
    ModelSet,
    Outcome,
    Scorer,
    assign_variant,
    prediction_value,
)
from streamscore import metrics
from streamscore.avro import AvroCodec
from streamscore.dlq import DeadLetter
from streamscore.errors import DataError, TransientError
from streamscore.topics import clean_topic, dlq_topic, predictions_topic, shadow_topic

log = structlog.get_logger(__name__)
Headers = list[tuple[str, bytes]]
Emit = Callable[[str, bytes | None, bytes | None, Headers | None], None]


@dataclass(frozen=True)
class Incoming:
    """One consumed Kafka message, as the handlers need it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = field(default_factory=list)


@dataclass
class BatchResult:
    """What a handler did with a batch; metrics and logs are applied once it is delivered."""

    agent: str
    source: str
    received: int = 0
    produced: int = 0
    letters: list[tuple[DeadLetter, str | None]] = field(default_factory=list)

    def record(self) -> None:
        metrics.PROCESSOR_IN.labels(agent=self.agent, source=self.source).inc(self.received)
        metrics.PROCESSOR_OUT.labels(agent=self.agent, source=self.source).inc(self.produced)
        metrics.PROCESSOR_BATCH.labels(agent=self.agent).observe(self.received)
        for letter, trace_id in self.letters:
            with structlog.contextvars.bound_contextvars(trace_id=trace_id):
                letter.record()


class _Handler:
    agent = ""

    def __init__(self, source: str) -> None:
        self.source = source
        self.dlq = dlq_topic(source)

    def _dead(
        self,
        result: BatchResult,
        emit: Emit,
        msg: Incoming,
        stage: str,
        exc: BaseException,
        record_id: str | None = None,
        trace_id: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        letter = DeadLetter(
            source=self.source,
            stage=stage,
            error=exc,
            key=msg.key,
            value=msg.value,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            record_id=record_id,
            extra={"agent": self.agent} | (extra or {}),
        )
        emit(self.dlq, msg.key, msg.value, [*msg.headers, *letter.headers()])
        result.letters.append((letter, trace_id))


class CleanHandler(_Handler):
    """``raw.<source>`` (RawRecord) → ``clean.<source>`` (Transaction)."""

    agent = "clean"

    def __init__(self, source: str, raw_codec: AvroCodec, clean_codec: AvroCodec) -> None:
        super().__init__(source)
        self.raw_codec = raw_codec
        self.clean_codec = clean_codec
        self.out = clean_topic(source)
        self._stage_latency = metrics.PROCESSOR_STAGE_LATENCY.labels(agent=self.agent)

    def handle(
        self, batch: Sequence[Incoming], emit: Emit, keep: list[tuple[Incoming, dict[str, Any]]] | None = None
    ) -> BatchResult:
        """Clean a batch; with ``keep``, also collect (message, Transaction fields) of the good ones."""
        result = BatchResult(self.agent, self.source, received=len(batch))
        now = datetime.now(UTC)
        for msg in batch:
            stage, record_id, trace_id = "decode", None, None
            try:
                raw = self.raw_codec.decode(msg.value)
                record_id, trace_id = raw.get("record_id"), raw.get("trace_id")
                stage = "validate"
                txn = clean_raw(raw)
                stage = "encode"
                fields = txn.to_avro()
                value = self.clean_codec.encode(fields)
                emit(self.out, txn.transaction_id.encode(), value, None)
            except TransientError:
                raise
            except Exception as exc:
                self._dead(result, emit, msg, stage, exc, record_id, trace_id)
                continue
            result.produced += 1
            self._stage_latency.observe((now - txn.fetched_at).total_seconds())
            if keep is not None:
                keep.append((msg, fields))
        return result


@dataclass
class _Row:
    msg: Incoming
    txn: dict[str, Any]
    variant: str

    @property
    def key(self) -> bytes:
        return str(self.txn["transaction_id"]).encode()


@dataclass(frozen=True)
class _ModelMetrics:
    """Metric children of one (model, variant), bound once."""

    scores: Any
    fraud: Any
    legit: Any
    anomalies: Any
    low_confidence: Any


class ScoreHandler(_Handler):
    """``clean.<source>`` (Transaction) → ``predictions.<source>`` (+ shadow) in micro-batches."""

    agent = "score"

    def __init__(
        self, source: str, clean_codec: AvroCodec, prediction_codec: AvroCodec, models: ModelSet
    ) -> None:
        super().__init__(source)
        self.clean_codec = clean_codec
        self.prediction_codec = prediction_codec
        self.models = models
        self.out = predictions_topic(source)
        self.shadow_out = shadow_topic(source)
        self._stage_latency = metrics.PROCESSOR_STAGE_LATENCY.labels(agent=self.agent)
        self._metrics: dict[tuple[str, str], _ModelMetrics] = {}

    def _runs(self, rows: list[_Row]) -> list[tuple[Scorer, str, str, list[int]]]:
        """(model, variant, topic, row indexes) of every ONNX run this batch needs."""
        m = self.models
        primary = [i for i, r in enumerate(rows) if r.variant == PRIMARY]
        runs = [(m.primary, PRIMARY, self.out, primary)]
        if m.candidate is not None:
            runs.append(
                (m.candidate, CANDIDATE, self.out, [i for i, r in enumerate(rows) if r.variant == CANDIDATE])
            )
        if m.shadow is not None:
            runs.append((m.shadow, SHADOW, self.shadow_out, list(range(len(rows)))))
        return [r for r in runs if r[3]]

    @staticmethod
    def _infer(scorer: Scorer, features: np.ndarray) -> list[float | BaseException]:
        """Scores of a matrix: one run; if it fails, row by row to isolate the culprit."""
        try:
            return list(scorer.predict(features).tolist())
        except Exception:
            out: list[float | BaseException] = []
            for i in range(len(features)):
                try:
                    out.append(float(scorer.predict(features[i : i + 1])[0]))
                except Exception as exc:
                    out.append(exc)
            return out

    def _infer_all(
        self, runs: list[tuple[Scorer, str, str, list[int]]], features: np.ndarray
    ) -> list[list[float | BaseException]]:
        return [self._infer(scorer, features[idx]) for scorer, _, _, idx in runs]

    async def handle(self, batch: Sequence[Incoming], emit: Emit) -> BatchResult:
        """Decode a batch of ``clean.<source>`` messages and score it."""
        result = BatchResult(self.agent, self.source, received=len(batch))
        pairs: list[tuple[Incoming, dict[str, Any]]] = []
        for msg in batch:
            try:
                pairs.append((msg, self.clean_codec.decode(msg.value)))
            except TransientError:
                raise
            except Exception as exc:
                self._dead(result, emit, msg, "decode", exc)
        return await self.score(pairs, emit, result)

    async def score(
        self, pairs: Sequence[tuple[Incoming, dict[str, Any]]], emit: Emit, result: BatchResult | None = None
    ) -> BatchResult:
        """Score (message, Transaction fields) pairs: one ONNX run per model, off the event loop."""
        result = result or BatchResult(self.agent, self.source, received=len(pairs))
        rows: list[_Row] = []
        feats: list[tuple[float, ...]] = []
        share = self.models.candidate_share
        for msg, txn in pairs:
            try:
                feats.append(feature_row(txn))
            except Exception as exc:
                self._dead(result, emit, msg, "score", exc, txn.get("transaction_id"), txn.get("trace_id"))
                continue
            rows.append(_Row(msg, txn, assign_variant(txn["transaction_id"], share)))
        if not rows:
            return result
        features = feature_matrix(feats)
        runs = self._runs(rows)
        scores = await asyncio.to_thread(self._infer_all, runs, features)
        scored_at = datetime.now(UTC)
        for (scorer, variant, topic, idx), run_scores in zip(runs, scores, strict=True):
            good = [s for s in run_scores if not isinstance(s, BaseException)]
            good_idx = [i for i, s in zip(idx, run_scores, strict=True) if not isinstance(s, BaseException)]
            outcomes = iter(scorer.outcomes(good, features[good_idx]))
            for i, score in zip(idx, run_scores, strict=True):
                row = rows[i]
                try:
                    if isinstance(score, BaseException):
                        raise score
                    outcome = next(outcomes)
                    if isinstance(outcome, Exception):
                        raise outcome
                    value = self._prediction(row.txn, scorer, variant, outcome, scored_at)
                    emit(topic, row.key, value, None)
                except TransientError:
                    raise
                except Exception as exc:
                    stage = "encode" if isinstance(exc, DataError) and exc.stage == "encode" else "score"
                    extra = {"model": scorer.card.ref, "variant": variant}
                    tid = row.txn["transaction_id"]
                    self._dead(result, emit, row.msg, stage, exc, tid, row.txn["trace_id"], extra)
                    continue
                if variant != SHADOW:
                    result.produced += 1
                    self._stage_latency.observe((scored_at - row.txn["fetched_at"]).total_seconds())
        return result

    def _bind(self, scorer: Scorer, variant: str) -> _ModelMetrics:
        labels = {"model": scorer.name, "version": scorer.version, "variant": variant}
        bound = _ModelMetrics(
            scores=metrics.SCORES.labels(**labels),
            fraud=metrics.PREDICTIONS.labels(**labels, label="fraud"),
            legit=metrics.PREDICTIONS.labels(**labels, label="legit"),
            anomalies=metrics.ANOMALIES.labels(**labels),
            low_confidence=metrics.LOW_CONFIDENCE.labels(**labels),
        )
        self._metrics[(scorer.card.ref, variant)] = bound
        return bound

    def _prediction(
        self, txn: dict[str, Any], scorer: Scorer, variant: str, o: Outcome, scored_at: datetime
    ) -> bytes:
        m = self._metrics.get((scorer.card.ref, variant)) or self._bind(scorer, variant)
        m.scores.observe(o.score)
        (m.fraud if o.label == "fraud" else m.legit).inc()
        if o.anomaly:
            m.anomalies.inc()
        if o.low_confidence:
            m.low_confidence.inc()
        value = prediction_value(txn, scorer, variant, o, scored_at)
        return self.prediction_codec.encode(value)
