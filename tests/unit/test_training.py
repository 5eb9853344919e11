"""The training recipe: a complete card, a loadable model, identical bytes for the same seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.features import FEATURES
from streams.model_store import load_card, sha256_file
from streams.scoring import Scorer
from streams.training import train
from streamscore.settings import ProcessorSettings


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_recipe_writes_a_verified_card_and_reproducible_bytes(tmp_path: Path, version: str) -> None:
    card = train(version, tmp_path / "a", n=4000, seed=3)
    again = train(version, tmp_path / "b", n=4000, seed=3)
    onnx = tmp_path / "a" / "fraud" / version / "model.onnx"
    assert sha256_file(onnx) == card["onnx"]["sha256"] == again["onnx"]["sha256"]
    assert card["features"] == list(FEATURES)
    assert set(card["training_ranges"]) == set(FEATURES)
    t = card["thresholds"]
    assert t["low_confidence_band"][0] <= t["decision"] <= t["low_confidence_band"][1]
    assert t["decision"] < t["anomaly"] <= 1
    assert 0.5 < card["metrics"]["holdout_auc"] <= 1
    assert card["training"]["rejected_by_cleaning"] > 0  # the generator's invalid records are left out
    loaded, path = load_card(tmp_path / "a", f"fraud:{version}", "S")
    assert path == onnx and loaded.version == version
    Scorer(loaded, path)  # onnxruntime accepts it and the card's input/output names
    assert json.loads((onnx.parent / "card.json").read_text())["name"] == "fraud"


def test_committed_cards_match_their_models() -> None:
    for version in ("v1", "v2"):
        card, path = load_card(ProcessorSettings().models_dir, f"fraud:{version}", "S")
        assert card.training["seed"] == 7 and card.training["n"] == 60_000
        assert path.stat().st_size < 200_000  # small enough to commit
