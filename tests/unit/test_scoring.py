"""Postprocessing, A/B assignment, the committed models, and model-loading refusals."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from streams.features import FEATURES, feature_row
from streams.model_store import load_card
from streams.scoring import CANDIDATE, PRIMARY, ModelSet, Scorer, assign_variant, postprocess
from streamscore.errors import ConfigError
from streamscore.settings import ProcessorSettings, Settings

MODELS = ProcessorSettings().models_dir
BAND = (0.2, 0.4)


def test_label_from_threshold_and_confidence() -> None:
    legit = postprocess(0.1, [], decision=0.3, band=BAND, anomaly_threshold=0.95)
    assert (legit.label, legit.confidence, legit.low_confidence, legit.anomaly) == (
        "legit",
        0.9,
        False,
        False,
    )
    fraud = postprocess(0.8, [], decision=0.3, band=BAND, anomaly_threshold=0.95)
    assert (fraud.label, fraud.confidence) == ("fraud", 0.8)
    edge = postprocess(0.3, [], decision=0.3, band=BAND, anomaly_threshold=0.95)
    assert edge.label == "fraud"  # the threshold itself is positive
    assert postprocess(0.5, [], 0.3, BAND, 0.95).confidence == 0.5


@pytest.mark.parametrize(
    ("score", "low"), [(0.19, False), (0.2, True), (0.3, True), (0.4, True), (0.41, False)]
)
def test_low_confidence_band_is_inclusive(score: float, low: bool) -> None:
    assert postprocess(score, [], 0.3, BAND, 0.95).low_confidence is low


def test_anomaly_from_score_and_from_out_of_range_features_with_reasons() -> None:
    high = postprocess(0.97, [], 0.3, BAND, 0.95)
    assert high.anomaly and high.reasons == ["score>=0.95"]
    oor = postprocess(0.1, ["log_amount_eur"], 0.3, BAND, 0.95)
    assert oor.anomaly and oor.reasons == ["log_amount_eur_outside_training_range"]
    both = postprocess(0.99, ["hour_utc", "category_code"], 0.3, BAND, 0.95)
    assert both.reasons == [
        "score>=0.95",
        "hour_utc_outside_training_range",
        "category_code_outside_training_range",
    ]
    assert not postprocess(0.5, [], 0.3, BAND, 0.95).anomaly


@pytest.mark.parametrize("score", [-0.01, 1.01, float("nan")])
def test_scores_outside_unit_interval_are_refused(score: float) -> None:
    with pytest.raises(ValueError, match="outside"):
        postprocess(score, [], 0.3, BAND, 0.95)


def test_ab_assignment_is_stable_and_follows_the_share() -> None:
    ids = [f"txn_{i:012d}" for i in range(20_000)]
    first = [assign_variant(i, 0.25) for i in ids]
    assert first == [assign_variant(i, 0.25) for i in ids]
    share = Counter(first)[CANDIDATE] / len(ids)
    assert 0.23 < share < 0.27
    assert {assign_variant(i, 0.0) for i in ids} == {PRIMARY}
    assert {assign_variant(i, 1.0) for i in ids} == {CANDIDATE}
    # a bigger share only moves records from primary to candidate, never back
    wider = [assign_variant(i, 0.5) for i in ids]
    assert all(w == CANDIDATE for f, w in zip(first, wider, strict=True) if f == CANDIDATE)


def test_ab_assignment_is_the_same_in_another_process() -> None:
    # blake2b of the id, not hash(): another interpreter with another hash seed agrees
    import os
    import subprocess
    import sys

    code = (
        "from streams.scoring import assign_variant;"
        "print(''.join(assign_variant(f'txn_{i:012d}', 0.5)[0] for i in range(200)))"
    )
    env = os.environ | {"PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    here = "".join(assign_variant(f"txn_{i:012d}", 0.5)[0] for i in range(200))
    assert other.stdout.strip() == here
    assert 60 < here.count("c") < 140


@pytest.mark.parametrize("ref", ["fraud:v1", "fraud:v2"])
def test_committed_models_load_and_separate_fraud_from_legit(ref: str) -> None:
    scorer = Scorer.load(MODELS, ref, "X", ProcessorSettings())
    assert scorer.card.features == list(FEATURES)
    assert scorer.card.metrics["holdout_auc"] > 0.9
    base = {
        "amount_eur": 25.0,
        "channel": "pos",
        "card_present": True,
        "country": "DE",
        "customer_country": "DE",
        "merchant_category": "grocery",
    }
    from datetime import UTC, datetime

    legit = feature_row(base | {"event_time": datetime(2025, 3, 1, 14, tzinfo=UTC)})
    risky = feature_row(
        base
        | {
            "amount_eur": 4000.0,
            "channel": "online",
            "card_present": False,
            "country": "NG",
            "merchant_category": "digital_goods",
            "event_time": datetime(2025, 3, 1, 3, tzinfo=UTC),
        }
    )
    scores = scorer.predict(np.asarray([legit, risky], dtype=np.float32))
    assert scores.shape == (2,)
    assert scores[0] < scorer.decision <= scores[1]
    outcomes = scorer.outcomes(scores.tolist(), np.asarray([legit, risky], dtype=np.float32))
    assert [o.label for o in outcomes] == ["legit", "fraud"]  # type: ignore[union-attr]


def test_out_of_range_features_are_flagged() -> None:
    scorer = Scorer.load(MODELS, "fraud:v1", "X", ProcessorSettings())
    row = np.asarray([[20.0, 3, 1, 0, 0, 1, 2]], dtype=np.float32)  # log amount far above training
    [outcome] = scorer.outcomes(scorer.predict(row).tolist(), row)
    assert outcome.anomaly  # type: ignore[union-attr]
    assert "log_amount_eur_outside_training_range" in outcome.reasons  # type: ignore[union-attr]


def test_model_set_loads_primary_candidate_and_shadow() -> None:
    settings = ProcessorSettings(candidate_model="fraud:v2", candidate_share=0.3, shadow_model="fraud:v2")
    models = ModelSet.load(settings)
    assert models.describe() == {
        "primary": "fraud:v1",
        "candidate": "fraud:v2",
        "candidate_share": 0.3,
        "shadow": "fraud:v2",
    }


def test_settings_refuse_a_share_without_candidate_and_a_bad_band() -> None:
    from streamscore.settings import load_settings

    with pytest.raises(ConfigError, match="STREAMSCORE_PROCESSOR"):
        load_settings(processor={"candidate_share": 0.2})
    with pytest.raises(ConfigError, match="LOW_CONFIDENCE_BAND"):
        load_settings(processor={"low_confidence_band": [0.6, 0.4]})
    assert isinstance(load_settings(processor={"primary_model": "fraud:v2"}), Settings)


# --- model-loading failures -------------------------------------------------------------------
@pytest.fixture
def models_copy(tmp_path: Path) -> Path:
    shutil.copytree(MODELS / "fraud", tmp_path / "fraud")
    return tmp_path


def test_missing_model_directory_is_refused_naming_the_card(models_copy: Path) -> None:
    with pytest.raises(ConfigError) as info:
        ModelSet.load(ProcessorSettings(models_dir=models_copy, primary_model="fraud:v9"))
    assert "STREAMSCORE_PROCESSOR__PRIMARY_MODEL" in str(info.value)
    assert str(models_copy / "fraud" / "v9" / "card.json") in str(info.value)


def test_missing_onnx_file_is_refused_naming_it(models_copy: Path) -> None:
    (models_copy / "fraud" / "v2" / "model.onnx").unlink()
    with pytest.raises(ConfigError) as info:
        ModelSet.load(ProcessorSettings(models_dir=models_copy, shadow_model="fraud:v2"))
    assert "STREAMSCORE_PROCESSOR__SHADOW_MODEL" in str(info.value)
    assert str(models_copy / "fraud" / "v2" / "model.onnx") in str(info.value)


def test_checksum_mismatch_is_refused_naming_the_file(models_copy: Path) -> None:
    onnx = models_copy / "fraud" / "v1" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes() + b"\0")
    with pytest.raises(ConfigError, match="checksum mismatch") as info:
        load_card(models_copy, "fraud:v1", "STREAMSCORE_PROCESSOR__PRIMARY_MODEL")
    assert str(onnx) in str(info.value)


def test_card_with_other_features_or_broken_json_is_refused(models_copy: Path) -> None:
    card_path = models_copy / "fraud" / "v1" / "card.json"
    card = json.loads(card_path.read_text())
    card["features"] = list(reversed(card["features"]))
    card_path.write_text(json.dumps(card))
    with pytest.raises(ConfigError, match="differ from the code"):
        load_card(models_copy, "fraud:v1", "S")
    card_path.write_text("{not json")
    with pytest.raises(ConfigError, match="invalid card"):
        load_card(models_copy, "fraud:v1", "S")


def test_card_naming_another_model_is_refused(models_copy: Path) -> None:
    shutil.copytree(models_copy / "fraud" / "v1", models_copy / "fraud" / "v3")
    with pytest.raises(ConfigError, match="describes fraud:v1"):
        load_card(models_copy, "fraud:v3", "S")


def test_onnx_that_does_not_parse_is_refused(models_copy: Path) -> None:
    folder = models_copy / "fraud" / "v1"
    (folder / "model.onnx").write_bytes(b"not an onnx model")
    card = json.loads((folder / "card.json").read_text())
    import hashlib

    card["onnx"]["sha256"] = hashlib.sha256(b"not an onnx model").hexdigest()
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(ConfigError, match="cannot load"):
        ModelSet.load(ProcessorSettings(models_dir=models_copy))
