"""The reproducible training recipe of the demo fraud models (``streamscore train``).

Data: ``producers.demo_api.generator.generate(n, seed)``, cleaned by the same rules as the
processor (``streams.domain``) and featurised by the same code (``streams.features``); records
the cleaning policy rejects are left out, as in the stream. Split train/validation/test
(70/15/15, stratified, seeded). The decision threshold maximises F1 on validation; the
low-confidence band is the threshold ± ``BAND_HALF_WIDTH``; the anomaly threshold is the
``ANOMALY_QUANTILE`` of validation scores. Metrics are measured on the test split.

Writes ``<out>/<name>/<version>/model.onnx`` (skl2onnx, zipmap off, output ``probabilities``)
and ``card.json``. With the same seed and library versions the ONNX bytes are identical.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from streams.domain import clean
from streams.features import FEATURES, feature_row
from streams.model_store import CARD, MODEL, sha256_file
from streamscore.errors import ValidationError

NAME = "fraud"
INPUT, OUTPUT = "features", "probabilities"
BAND_HALF_WIDTH = 0.1
ANOMALY_QUANTILE = 0.995
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
_FETCHED_AT = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Recipe:
    version: str
    algorithm: str
    build: Callable[[int], Any]


def _gbt(seed: int) -> Any:
    # GradientBoostingClassifier, not HistGradientBoosting: skl2onnx 1.20 cannot convert the latter
    # from scikit-learn 1.9 (boolean tree attributes).
    from sklearn.ensemble import GradientBoostingClassifier

    return GradientBoostingClassifier(
        n_estimators=150, max_depth=3, learning_rate=0.1, subsample=0.8, random_state=seed
    )


def _logreg(seed: int) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    cat = FEATURES.index("category_code")
    hour = FEATURES.index("hour_utc")
    numeric = [i for i in range(len(FEATURES)) if i not in (cat, hour)]
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore", categories=[list(range(11))]), [cat]),
            ("hour", OneHotEncoder(handle_unknown="ignore", categories=[list(range(24))]), [hour]),
        ]
    )
    return Pipeline([("prep", prep), ("clf", LogisticRegression(C=1.0, max_iter=2000, random_state=seed))])


RECIPES = {
    "v1": Recipe("v1", "GradientBoostingClassifier", _gbt),
    "v2": Recipe("v2", "LogisticRegression (one-hot category and hour, scaled numerics)", _logreg),
}


def dataset(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(X, y, rejected) from the demo generator through the processor's cleaning rules."""
    from producers.demo_api.generator import generate

    rows: list[tuple[float, ...]] = []
    labels: list[int] = []
    rejected = 0
    for i, (record, is_fraud) in enumerate(generate(n, seed)):
        try:
            txn = clean(
                record,
                source="transactions",
                record_id=str(record.get("id") or f"row-{i}"),
                fetched_at=_FETCHED_AT,
                trace_id="train",
            )
        except ValidationError:
            rejected += 1
            continue
        rows.append(feature_row(txn.model_dump()))
        labels.append(int(bool(is_fraud)))
    return np.asarray(rows, dtype=np.float32), np.asarray(labels, dtype=np.int64), rejected


def _best_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y, p)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    return float(np.clip(thresholds[int(np.argmax(f1))], 0.01, 0.99))


def _to_onnx(model: Any) -> bytes:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    onx = to_onnx(
        model,
        initial_types=[(INPUT, FloatTensorType([None, len(FEATURES)]))],
        options={"zipmap": False},
        target_opset=TARGET_OPSET,
        final_types=None,
    )
    for output in onx.graph.output:
        if output.name not in ("label", OUTPUT):
            raise RuntimeError(f"unexpected ONNX output {output.name}")
    # skl2onnx collects opsets in a set: fix their order so the bytes are reproducible
    opsets = sorted(((o.domain, o.version) for o in onx.opset_import), key=lambda o: o[0])
    del onx.opset_import[:]
    for domain, version in opsets:
        onx.opset_import.add(domain=domain, version=version)
    return bytes(onx.SerializeToString())


def train(version: str, out: Path, n: int = 60_000, seed: int = 7) -> dict[str, Any]:
    """Train one recipe version, write model.onnx + card.json, return the card."""
    import onnxruntime as ort
    import sklearn
    from sklearn.metrics import average_precision_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    recipe = RECIPES[version]
    X, y, rejected = dataset(n, seed)
    X_train, X_rest, y_train, y_rest = train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)
    X_val, X_test, y_val, y_test = train_test_split(
        X_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=seed
    )
    model = recipe.build(seed).fit(X_train, y_train)
    p_val = model.predict_proba(X_val)[:, 1]
    p_test = model.predict_proba(X_test)[:, 1]
    decision = _best_f1_threshold(y_val, p_val)
    anomaly = float(max(np.quantile(p_val, ANOMALY_QUANTILE), min(0.99, decision + BAND_HALF_WIDTH)))

    folder = out / NAME / version
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / MODEL
    onnx_path.write_bytes(_to_onnx(model))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    p_onnx = session.run([OUTPUT], {INPUT: X_test})[0][:, 1]
    drift = float(np.max(np.abs(p_onnx - p_test)))
    if drift > 1e-4:
        raise RuntimeError(f"ONNX and scikit-learn disagree by {drift:g} on the test split")

    card = {
        "name": NAME,
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "algorithm": recipe.algorithm,
        "features": list(FEATURES),
        "dtypes": dict.fromkeys(FEATURES, "float32"),
        "training_ranges": {
            f: [float(X_train[:, i].min()), float(X_train[:, i].max())] for i, f in enumerate(FEATURES)
        },
        "thresholds": {
            "decision": round(decision, 6),
            "low_confidence_band": [
                round(max(0.0, decision - BAND_HALF_WIDTH), 6),
                round(min(1.0, decision + BAND_HALF_WIDTH), 6),
            ],
            "anomaly": round(anomaly, 6),
        },
        "metrics": {
            "holdout_auc": round(float(roc_auc_score(y_test, p_test)), 6),
            "holdout_average_precision": round(float(average_precision_score(y_test, p_test)), 6),
            "holdout_size": len(y_test),
            "holdout_positive_rate": round(float(y_test.mean()), 6),
            "onnx_max_abs_diff": drift,
        },
        "onnx": {
            "file": MODEL,
            "sha256": sha256_file(onnx_path),
            "input": INPUT,
            "output": OUTPUT,
            "opset": TARGET_OPSET[""],
        },
        "training": {
            "generator": "producers.demo_api.generator.generate",
            "n": n,
            "seed": seed,
            "rejected_by_cleaning": rejected,
            "split": "70/15/15 stratified",
            "scikit_learn": sklearn.__version__,
            "recipe": "streams/training.py",
        },
    }
    (folder / CARD).write_text(json.dumps(card, indent=2) + "\n")
    return card
