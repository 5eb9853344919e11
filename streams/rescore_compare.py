"""The comparison a rescore prints: per-version counts and agreement with the baseline version.

Pure functions over the predictions keyed by record id, so a test can recompute every number.
Per-version rows cover each version's own records (the rescored window; the baseline records
found); agreement and score shift cover the records both versions scored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import fmean
from typing import Any


@dataclass(frozen=True)
class Scored:
    """What the comparison needs of one prediction."""

    score: float
    label: str
    anomaly: bool
    low_confidence: bool

    @classmethod
    def of(cls, prediction: dict[str, Any]) -> Scored:
        return cls(
            float(prediction["score"]),
            str(prediction["label"]),
            bool(prediction["anomaly"]),
            bool(prediction["low_confidence"]),
        )


@dataclass(frozen=True)
class VersionStats:
    ref: str
    role: str
    records: int
    mean_score: float | None
    fraud: int
    anomalies: int
    low_confidence: int


@dataclass(frozen=True)
class Comparison:
    new: VersionStats
    baseline: VersionStats
    compared: int
    agreement: float | None
    """Share of the compared records whose label is the same under both versions."""
    mean_shift: float | None
    """Mean of (new score - baseline score) over the compared records."""
    mean_abs_shift: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def version_stats(ref: str, role: str, preds: dict[str, Scored]) -> VersionStats:
    values = list(preds.values())
    return VersionStats(
        ref=ref,
        role=role,
        records=len(values),
        mean_score=fmean(p.score for p in values) if values else None,
        fraud=sum(p.label == "fraud" for p in values),
        anomalies=sum(p.anomaly for p in values),
        low_confidence=sum(p.low_confidence for p in values),
    )


def compare(new_ref: str, new: dict[str, Scored], base_ref: str, base: dict[str, Scored]) -> Comparison:
    both = [rid for rid in new if rid in base]
    shifts = [new[rid].score - base[rid].score for rid in both]
    return Comparison(
        new=version_stats(new_ref, "rescored", new),
        baseline=version_stats(base_ref, "baseline", {rid: base[rid] for rid in base if rid in new}),
        compared=len(both),
        agreement=fmean(new[rid].label == base[rid].label for rid in both) if both else None,
        mean_shift=fmean(shifts) if shifts else None,
        mean_abs_shift=fmean(abs(s) for s in shifts) if shifts else None,
    )
