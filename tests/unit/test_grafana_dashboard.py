"""deploy/grafana: the dashboard parses, its panels do not overlap, every query is valid PromQL
(promtool) over metrics defined in streamscore.metrics, and provisioning matches docker-compose."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_prometheus_rules import defined, known_metric_names, referenced_metrics, run

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
# Grafana's own variables, replaced by what they expand to so promtool can parse the query.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$source": ".*"}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def queries(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]


@pytest.fixture(params=DASHBOARDS, ids=lambda p: p.name)
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    return dict(json.loads(request.param.read_text()))


def test_there_is_a_dashboard() -> None:
    assert DASHBOARDS


def test_panels_have_unique_ids_and_do_not_overlap(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    taken: dict[tuple[int, int], str] = {}
    for p in panels(dashboard):
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for cell in ((x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])):
            assert cell not in taken, f"{p['title']} overlaps {taken[cell]}"
            taken[cell] = p["title"]


def test_covers_what_operators_need(dashboard: dict[str, Any]) -> None:
    text = "\n".join(queries(dashboard))
    for metric in (
        "streamscore_poller_records_produced_total",  # throughput per stage
        "streamscore_processor_records_out_total",
        "streamscore_sink_documents_written_total",
        "streamscore_consumer_lag_messages",  # lag
        "streamscore_consumer_lag_seconds",
        "streamscore_pipeline_end_to_end_latency_seconds_bucket",  # latency percentiles
        "streamscore_dlq_records_total",  # DLQ
        "streamscore_processor_score_ratio_bucket",  # score distribution
        "streamscore_processor_anomalies_total",  # anomalies per model version
    ):
        assert metric in text, metric


def test_queries_use_defined_metrics(dashboard: dict[str, Any]) -> None:
    known = known_metric_names()
    used = set().union(*(referenced_metrics(q) for q in queries(dashboard)))
    unknown = sorted(n for n in used if not defined(n, known))
    assert not unknown, f"dashboard uses metrics not in streamscore/metrics.py: {unknown}"


def test_queries_are_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    rules = []
    for i, expr in enumerate(queries(dashboard)):
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        assert "$" not in re.sub(r'"\$\d"', "", expr), f"unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = run("check", "rules", str(path))
    assert out.returncode == 0, out.stdout + out.stderr


def test_provisioning_matches_compose_and_dashboard() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = dict(v.rsplit(":", 2)[:2] for v in compose["services"]["grafana"]["volumes"])
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "streamscore.yml").read_text())
    assert mounts["./deploy/grafana/dashboards"] == provider["providers"][0]["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uids = {d["uid"] for d in datasource["datasources"]}
    for dash_path in DASHBOARDS:
        for p in panels(json.loads(dash_path.read_text())):
            if "datasource" in p:
                assert p["datasource"]["uid"] in uids, p["title"]
