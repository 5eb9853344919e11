"""The model features of a clean Transaction, shared by training and serving (one definition).

Order and meaning are ``docs/demo-data.md`` ("Model features"); the model card repeats the order
and the scorer refuses a card whose features differ from :data:`FEATURES`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from streams.domain import CATEGORIES

FEATURES = (
    "log_amount_eur",
    "hour_utc",
    "is_online",
    "is_atm",
    "card_present",
    "is_foreign",
    "category_code",
)
CATEGORY_CODE = {name: float(i) for i, name in enumerate(CATEGORIES)}
OTHER_CODE = float(len(CATEGORIES))


def feature_row(txn: Mapping[str, Any]) -> tuple[float, ...]:
    """One row in FEATURES order from a Transaction's fields (Avro-decoded dict or model dump)."""
    chan = txn["channel"]
    return (
        math.log1p(float(txn["amount_eur"])),
        float(txn["event_time"].hour),
        1.0 if chan == "online" else 0.0,
        1.0 if chan == "atm" else 0.0,
        1.0 if txn["card_present"] else 0.0,
        1.0 if txn["country"] != txn["customer_country"] else 0.0,
        CATEGORY_CODE.get(txn["merchant_category"], OTHER_CODE),
    )


def feature_matrix(rows: Sequence[tuple[float, ...]]) -> np.ndarray:
    """float32 matrix (n, len(FEATURES)) for onnxruntime."""
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), len(FEATURES))
