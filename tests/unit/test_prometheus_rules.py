"""deploy/prometheus: configs valid, rules valid, rule unit tests pass (promtool), and every metric
the rules name exists in streamscore.metrics. Without promtool: skip locally, fail under CI=true."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

import streamscore.metrics  # noqa: F401  (registers every streamscore metric)

PROM = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = sorted((PROM / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROM / "tests").glob("*.yml"))
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created", "_info")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool not found: install Debian's prometheus package (deploy/local/stack.sh fetch)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, cwd=PROM)


def test_rule_files_and_tests_exist() -> None:
    assert RULES, "no rule files in deploy/prometheus/rules"
    assert RULE_TESTS, "no rule unit tests in deploy/prometheus/tests"


def test_promtool_check_rules() -> None:
    out = run("check", "rules", *map(str, RULES))
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.docker.yml"])
def test_promtool_check_config(config: str) -> None:
    out = run("check", "config", config)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_test_rules() -> None:
    out = run("test", "rules", *map(str, RULE_TESTS))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def known_metric_names() -> set[str]:
    names: set[str] = set()
    for collector in list(REGISTRY._collector_to_names):
        for metric in collector.collect():
            names.add(metric.name)
            names.update(s.name for s in metric.samples)
    return {n for n in names if n.startswith("streamscore_")}


def defined(name: str, known: set[str]) -> bool:
    """A metric name, or a series name (``_bucket``, ``_total``, ...) of one, in metrics.py."""
    return name in known or any(name.endswith(s) and name[: -len(s)] in known for s in SUFFIXES)


def referenced_metrics(text: str) -> set[str]:
    return set(re.findall(r"\bstreamscore_[a-z0-9_]+", text))


def test_rules_only_use_defined_metrics() -> None:
    known = known_metric_names()
    used = set().union(*(referenced_metrics(p.read_text()) for p in RULES))
    assert used, "rules reference no streamscore metric"
    unknown = {n for n in used if not defined(n, known)}
    assert not unknown, f"rules use metrics not defined in streamscore/metrics.py: {sorted(unknown)}"
