"""Contracts: pydantic mirrors match the .avsc files, values round-trip, and every schema is
BACKWARD compatible with each of its previous versions (``schemas/avro/history/`` and, where git
history is at hand, every committed version of the file)."""

from __future__ import annotations

import copy
import io
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import fastavro.utils
import pytest

from streamscore.avro import SCHEMAS_DIR, load_schema
from streamscore.contracts import CONTRACTS, Prediction, RawRecord, Transaction
from streamscore.settings import REPO_ROOT

HISTORY = SCHEMAS_DIR / "history"
PROMOTIONS = {
    "int": {"int"},
    "long": {"int", "long"},
    "float": {"int", "long", "float"},
    "double": {"int", "long", "float", "double"},
    "string": {"string", "bytes"},
    "bytes": {"string", "bytes"},
}


def _type_name(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, dict):
        return (
            str(schema["type"])
            if schema["type"] in ("record", "enum", "array", "map", "fixed")
            else _type_name(schema["type"])
        )
    return str(schema)


def backward_problems(reader: Any, writer: Any, path: str = "") -> list[str]:
    """Why data written with ``writer`` cannot be read with ``reader`` (empty list: compatible)."""
    r, w = _type_name(reader), _type_name(writer)
    if w == "union":
        return [p for branch in writer for p in backward_problems(reader, branch, path)]
    if r == "union":
        options = [backward_problems(branch, writer, path) for branch in reader]
        return [] if any(not o for o in options) else [f"{path}: {w} matches no branch of the reader union"]
    if r == "record" and w == "record":
        problems: list[str] = []
        written = {f["name"]: f for f in writer["fields"]}
        for field in reader["fields"]:
            name = field["name"]
            if name in written:
                problems += backward_problems(field["type"], written[name]["type"], f"{path}.{name}")
            elif "default" not in field:
                problems.append(f"{path}.{name}: new field without a default")
        return problems
    if r == "array" and w == "array":
        return backward_problems(reader["items"], writer["items"], f"{path}[]")
    if r == "map" and w == "map":
        return backward_problems(reader["values"], writer["values"], f"{path}{{}}")
    if r == "enum" and w == "enum":
        missing = set(writer["symbols"]) - set(reader["symbols"])
        return (
            [f"{path}: enum symbols {sorted(missing)} removed without a default"]
            if missing and "default" not in reader
            else []
        )
    if r in PROMOTIONS and w in PROMOTIONS[r]:
        return []
    return [] if r == w else [f"{path}: {w} cannot be read as {r}"]


def previous_versions(name: str) -> list[tuple[str, dict[str, Any]]]:
    """(label, schema) of every earlier version of ``name``: history files, then git commits."""
    versions = [(p.name, json.loads(p.read_text())) for p in sorted(HISTORY.glob(f"{name}.v*.avsc"))]
    rel = f"schemas/avro/{name}.avsc"
    try:
        commits = subprocess.run(
            ["git", "log", "--format=%H", "--", rel],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        commits = []
    for commit in commits:
        shown = subprocess.run(
            ["git", "show", f"{commit}:{rel}"], cwd=REPO_ROOT, capture_output=True, text=True
        )
        if shown.returncode == 0:
            versions.append((f"git {commit[:10]}", json.loads(shown.stdout)))
    return versions


def roundtrip(schema: dict[str, Any], record: dict[str, Any], reader: dict[str, Any] | None = None) -> Any:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), record, strict=True)
    buf.seek(0)
    return fastavro.schemaless_reader(
        buf, fastavro.parse_schema(schema), fastavro.parse_schema(reader) if reader else None
    )


NOW = datetime(2025, 3, 1, 12, 30, 15, 123000, tzinfo=UTC)
SAMPLES = {
    "RawRecord": RawRecord(
        source="transactions",
        record_id="txn_1",
        fetched_at=NOW,
        cursor="c1",
        payload='{"id":"txn_1"}',
        trace_id="t1",
    ),
    "Transaction": Transaction(
        transaction_id="txn_1",
        source="transactions",
        customer_id="cus_00001",
        customer_country="DE",
        merchant_id=None,
        merchant_category="travel",
        amount=12.5,
        currency="USD",
        amount_eur=11.5,
        country="FR",
        channel="online",
        card_present=False,
        event_time=NOW,
        fetched_at=NOW,
        trace_id="t1",
        imputed_fields=["card_present"],
    ),
    "Prediction": Prediction(
        record_id="txn_1",
        source="transactions",
        event_time=NOW,
        model_name="fraud",
        model_version="v1",
        variant="primary",
        score=0.9,
        label="fraud",
        confidence=0.9,
        low_confidence=False,
        anomaly=True,
        reasons=["score>=0.9"],
        customer_id="cus_00001",
        amount_eur=11.5,
        fetched_at=NOW,
        scored_at=NOW,
        trace_id="t1",
    ),
}


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_pydantic_fields_equal_avsc_fields(name: str) -> None:
    avsc = [f["name"] for f in load_schema(name)["fields"]]
    assert list(CONTRACTS[name].model_fields) == avsc


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_value_roundtrips_through_avro(name: str) -> None:
    model = SAMPLES[name]
    back = roundtrip(load_schema(name), model.to_avro())
    assert CONTRACTS[name].model_validate(back) == model


def test_every_contract_has_a_sample_and_a_history() -> None:
    avsc = {p.stem for p in SCHEMAS_DIR.glob("*.avsc")}
    assert avsc == set(CONTRACTS) == set(SAMPLES)
    for name in avsc:
        assert any(label.endswith(".avsc") for label, _ in previous_versions(name)), name


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_schema_is_backward_compatible_with_previous_versions(name: str) -> None:
    current = load_schema(name)
    for label, old in previous_versions(name):
        assert backward_problems(current, old) == [], f"{name} vs {label}"
        for record in fastavro.utils.generate_many(old, 50):
            roundtrip(old, record, reader=current)  # raises SchemaResolutionError if not


def test_checker_rejects_a_new_field_without_default() -> None:
    old = load_schema("Prediction")
    new = copy.deepcopy(old)
    new["fields"].append({"name": "region", "type": "string"})
    assert backward_problems(new, old) == [".region: new field without a default"]
    new["fields"][-1]["default"] = "eu"
    assert backward_problems(new, old) == []


def test_checker_rejects_a_narrowed_type_and_a_removed_union_branch() -> None:
    old = load_schema("Transaction")
    narrowed = copy.deepcopy(old)
    next(f for f in narrowed["fields"] if f["name"] == "amount")["type"] = "float"
    assert backward_problems(narrowed, old) == [".amount: double cannot be read as float"]
    no_null = copy.deepcopy(old)
    next(f for f in no_null["fields"] if f["name"] == "merchant_id")["type"] = "string"
    assert backward_problems(no_null, old) == [".merchant_id: null cannot be read as string"]
    widened = copy.deepcopy(old)
    widened["fields"].append({"name": "note", "type": ["null", "string"], "default": None})
    assert backward_problems(widened, old) == []


def test_history_files_hold_the_first_committed_versions() -> None:
    for path in HISTORY.glob("*.v1.avsc"):
        name = path.name.split(".")[0]
        assert json.loads(path.read_text())["name"] == name
        assert Path(SCHEMAS_DIR / f"{name}.avsc").exists()
