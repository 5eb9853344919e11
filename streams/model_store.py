"""Model artifacts on disk: ``<models_dir>/<name>/<version>/model.onnx`` + ``card.json``.

:func:`load_model` refuses (ConfigError naming the file and the setting) a missing card or model,
a checksum mismatch, or a card whose feature list is not the one the code builds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from streams.features import FEATURES
from streamscore.errors import ConfigError

CARD = "card.json"
MODEL = "model.onnx"


class Thresholds(BaseModel):
    decision: float = Field(gt=0, lt=1)
    low_confidence_band: tuple[float, float]
    anomaly: float = Field(gt=0, le=1)

    @model_validator(mode="after")
    def _band(self) -> Thresholds:
        low, high = self.low_confidence_band
        if not 0 <= low <= high <= 1:
            raise ValueError("low_confidence_band must be [low, high] within [0, 1]")
        return self


class OnnxInfo(BaseModel):
    file: str = MODEL
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    input: str
    output: str
    opset: int | None = None


class ModelCard(BaseModel):
    """What ``card.json`` holds (DESIGN.md section 4)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    name: str
    version: str
    created_at: str
    algorithm: str
    features: list[str]
    dtypes: dict[str, str]
    training_ranges: dict[str, tuple[float, float]]
    thresholds: Thresholds
    metrics: dict[str, float]
    onnx: OnnxInfo
    training: dict[str, Any] = Field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def split_ref(ref: str) -> tuple[str, str]:
    name, _, version = ref.partition(":")
    return name, version


def model_dir(models_dir: Path, ref: str) -> Path:
    name, version = split_ref(ref)
    return Path(models_dir) / name / version


def load_card(models_dir: Path, ref: str, setting: str) -> tuple[ModelCard, Path]:
    """The validated card of ``ref`` and the path of its verified ONNX file."""
    folder = model_dir(models_dir, ref)
    card_path = folder / CARD
    if not card_path.is_file():
        raise ConfigError(setting, f"model {ref}: card not found: {card_path}")
    try:
        card = ModelCard.model_validate(json.loads(card_path.read_text()))
    except (ValueError, PydanticValidationError) as exc:
        raise ConfigError(setting, f"model {ref}: invalid card {card_path}: {exc}") from None
    if card.ref != ref:
        raise ConfigError(setting, f"model {ref}: {card_path} describes {card.ref}")
    if tuple(card.features) != FEATURES:
        raise ConfigError(
            setting, f"model {ref}: {card_path} features {card.features} differ from the code's {FEATURES}"
        )
    missing = [f for f in card.features if f not in card.training_ranges]
    if missing:
        raise ConfigError(setting, f"model {ref}: {card_path} has no training range for {missing}")
    onnx_path = folder / card.onnx.file
    if not onnx_path.is_file():
        raise ConfigError(setting, f"model {ref}: model file not found: {onnx_path}")
    actual = sha256_file(onnx_path)
    if actual != card.onnx.sha256:
        raise ConfigError(
            setting,
            f"model {ref}: checksum mismatch for {onnx_path}: sha256 {actual} != card {card.onnx.sha256}",
        )
    return card, onnx_path
