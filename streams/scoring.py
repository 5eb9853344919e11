"""ONNX scoring runtime and postprocessing.

A :class:`Scorer` holds one verified model (onnxruntime session with one intra-op thread, spinning
off) and turns a batch's feature matrix into probabilities of the positive class.
:func:`postprocess` makes the prediction fields: label from the decision threshold,
``confidence = max(p, 1 - p)``, the low-confidence band, and the anomaly flag with its reasons.
:func:`assign_variant` splits records between primary and candidate by a stable hash of the id.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnxruntime as ort

from streams.features import FEATURES
from streams.model_store import ModelCard, load_card
from streamscore import metrics
from streamscore.contracts import Prediction
from streamscore.errors import ConfigError
from streamscore.settings import ProcessorSettings

PRIMARY, CANDIDATE, SHADOW = "primary", "candidate", "shadow"
_HASH_SPACE = float(1 << 64)


def assign_variant(record_id: str, candidate_share: float) -> str:
    """``candidate`` for a stable ``candidate_share`` of record ids (blake2b), else ``primary``."""
    if candidate_share <= 0:
        return PRIMARY
    digest = hashlib.blake2b(record_id.encode(), digest_size=8, person=b"streamscore-ab").digest()
    return CANDIDATE if int.from_bytes(digest, "big") / _HASH_SPACE < candidate_share else PRIMARY


@dataclass(frozen=True)
class Outcome:
    """Postprocessed fields of one prediction."""

    score: float
    label: str
    confidence: float
    low_confidence: bool
    anomaly: bool
    reasons: list[str]


class Scorer:
    """One model: card, ONNX session, bounds for the out-of-range check."""

    def __init__(
        self, card: ModelCard, onnx_path: Path, threads: int = 1, band: tuple[float, float] | None = None
    ) -> None:
        self.card = card
        self.name = card.name
        self.version = card.version
        self.band = band or card.thresholds.low_confidence_band
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ConfigError(
                "STREAMSCORE_PROCESSOR__MODELS_DIR", f"cannot load {onnx_path}: {exc}"
            ) from None
        self._input = card.onnx.input
        self._output = card.onnx.output
        names = [o.name for o in self.session.get_outputs()]
        if self._output not in names or self._input not in [i.name for i in self.session.get_inputs()]:
            raise ConfigError(
                "STREAMSCORE_PROCESSOR__MODELS_DIR",
                f"{onnx_path}: card names input {self._input!r}/output {self._output!r}, model has {names}",
            )
        ranges = card.training_ranges
        self.low = np.array([ranges[f][0] for f in FEATURES], dtype=np.float32)
        self.high = np.array([ranges[f][1] for f in FEATURES], dtype=np.float32)
        t = card.thresholds
        self.decision = t.decision
        self.anomaly = t.anomaly
        self._latency = metrics.INFERENCE_LATENCY.labels(model=self.name, version=self.version)

    @classmethod
    def load(cls, models_dir: Path, ref: str, setting: str, settings: ProcessorSettings) -> Scorer:
        card, path = load_card(models_dir, ref, setting)
        return cls(card, path, settings.inference_threads, settings.low_confidence_band)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Probability of the positive class for each row (one ONNX run)."""
        start = time.perf_counter()
        out = self.session.run([self._output], {self._input: features})[0]
        self._latency.observe(time.perf_counter() - start)
        probs = np.asarray(out, dtype=np.float64)
        return probs[:, 1] if probs.ndim == 2 else probs

    def out_of_range(self, features: np.ndarray) -> np.ndarray:
        """Boolean matrix: feature below/above the training range."""
        return (features < self.low) | (features > self.high)

    def outcomes(self, scores: list[float], features: np.ndarray) -> list[Outcome | ValueError]:
        """Postprocessed fields per row; a row whose score breaks the contract gets its error."""
        oor = self.out_of_range(features)
        flagged = cast(list[bool], oor.any(axis=1).tolist())
        out: list[Outcome | ValueError] = []
        for i, score in enumerate(scores):
            names = [FEATURES[j] for j in np.flatnonzero(oor[i]).tolist()] if flagged[i] else []
            try:
                out.append(postprocess(score, names, self.decision, self.band, self.anomaly))
            except ValueError as exc:
                out.append(exc)
        return out


def postprocess(
    score: float,
    out_of_range: list[str],
    decision: float,
    band: tuple[float, float],
    anomaly_threshold: float,
) -> Outcome:
    """Prediction fields of one score; ``out_of_range`` names features outside training ranges."""
    if not 0.0 <= score <= 1.0:  # NaN included: a model that breaks its contract
        raise ValueError(f"score {score!r} outside [0, 1]")
    reasons = [f"score>={anomaly_threshold:g}"] if score >= anomaly_threshold else []
    reasons += [f"{name}_outside_training_range" for name in out_of_range]
    return Outcome(
        score=score,
        label="fraud" if score >= decision else "legit",
        confidence=max(score, 1.0 - score),
        low_confidence=band[0] <= score <= band[1],
        anomaly=bool(reasons),
        reasons=reasons,
    )


@dataclass
class ModelSet:
    """The models serving at once: primary, optional candidate (A/B) and shadow."""

    primary: Scorer
    candidate: Scorer | None
    candidate_share: float
    shadow: Scorer | None

    @classmethod
    def load(cls, settings: ProcessorSettings) -> ModelSet:
        def one(ref: str | None, setting: str) -> Scorer | None:
            return None if ref is None else Scorer.load(settings.models_dir, ref, setting, settings)

        primary = one(settings.primary_model, "STREAMSCORE_PROCESSOR__PRIMARY_MODEL")
        assert primary is not None
        return cls(
            primary=primary,
            candidate=one(settings.candidate_model, "STREAMSCORE_PROCESSOR__CANDIDATE_MODEL"),
            candidate_share=settings.candidate_share if settings.candidate_model else 0.0,
            shadow=one(settings.shadow_model, "STREAMSCORE_PROCESSOR__SHADOW_MODEL"),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "primary": self.primary.card.ref,
            "candidate": self.candidate.card.ref if self.candidate else None,
            "candidate_share": self.candidate_share,
            "shadow": self.shadow.card.ref if self.shadow else None,
        }


def prediction_value(
    txn: dict[str, Any], scorer: Scorer, variant: str, o: Outcome, scored_at: datetime
) -> dict[str, Any]:
    """The Avro value of one prediction of ``scorer`` for a clean Transaction (one builder for the
    score agent and rescore jobs)."""
    return Prediction(
        record_id=txn["transaction_id"],
        source=txn["source"],
        event_time=txn["event_time"],
        model_name=scorer.name,
        model_version=scorer.version,
        variant=variant,
        score=o.score,
        label=o.label,
        confidence=o.confidence,
        low_confidence=o.low_confidence,
        anomaly=o.anomaly,
        reasons=o.reasons,
        customer_id=txn["customer_id"],
        amount_eur=txn["amount_eur"],
        fetched_at=txn["fetched_at"],
        scored_at=scored_at,
        trace_id=txn["trace_id"],
    ).to_avro()
