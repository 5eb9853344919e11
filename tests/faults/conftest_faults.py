"""Fixtures of the fault tests; each test module imports them from ``tests.faults.conftest_faults``.

``make_pipeline`` builds :class:`tests.faults.harness.Pipeline` objects that are always stopped and
whose MongoDB database is dropped after the test; ``stack_restored`` makes sure every stack
service answers again after a test that took one down, whatever the test's outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults import stack_control
from tests.faults.harness import Pipeline, PipelineConfig


@pytest.fixture
def make_pipeline(stack: None, tmp_path: Path) -> Iterator[Callable[..., Pipeline]]:
    made: list[Pipeline] = []

    def build(config: PipelineConfig | None = None, **env: str) -> Pipeline:
        folder = tmp_path / f"p{len(made)}"
        folder.mkdir()
        pipeline = Pipeline(folder, config, **env)
        made.append(pipeline)
        return pipeline

    yield build
    for pipeline in made:
        pipeline.stop_all()
        pipeline.drop_database()


@pytest.fixture
def stack_restored() -> Iterator[None]:
    """For tests that stop services: skip unless allowed (stack_control), restart what is down after."""
    stack_control.require_control()
    yield
    stack_control.ensure_up()


def report(name: str, **facts: Any) -> None:
    """Print one result line (``pytest -s`` shows them; docs/reliability.md quotes them)."""
    parts = " ".join(f"{k}={round(v, 1) if isinstance(v, float) else v}" for k, v in facts.items())
    print(f"\n[faults] {name}: {parts}")
