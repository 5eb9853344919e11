"""The registry itself (Apicurio's Confluent-compatible API) agrees that each contract is BACKWARD
compatible with its first committed version, and refuses an incompatible change."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from streamscore.avro import SCHEMAS_DIR, load_schema
from streamscore.registry import SchemaRegistry
from tests.conftest import unique

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", ["RawRecord", "Transaction", "Prediction"])
def test_registry_accepts_current_schema_after_previous_version(
    stack: None, make_settings: Any, name: str
) -> None:
    registry = SchemaRegistry(make_settings().registry)
    subject = f"{unique('compat')}-{name}-value"
    previous = json.loads((SCHEMAS_DIR / "history" / f"{name}.v1.avsc").read_text())
    registry.set_compatibility(subject, "BACKWARD")
    registry.schema_id(subject, previous, register=True)
    current = load_schema(name)
    assert registry.is_compatible(subject, json.dumps(current))
    broken = copy.deepcopy(current)
    broken["fields"].append({"name": "required_without_default", "type": "string"})
    assert not registry.is_compatible(subject, json.dumps(broken))
