"""Smoke of the end-to-end harness (``make bench``): a few seconds of load through streamscore.

No timed assertions: it checks that the harness runs the pipeline, counts records, measures
latency and CPU, and writes a sane result file and report; the figures themselves are for
``make bench``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from streamscore.settings import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("stack"), pytest.mark.timeout(300)]


def test_harness_measures_streamscore_end_to_end(tmp_path: Path) -> None:
    out, doc = tmp_path / "result.json", tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Someone else's section\n\nkept\n")
    cmd = [sys.executable, "-m", "bench", "--pipelines", "streamscore", "--rate", "200"]
    cmd += ["--quick", "--duration", "4", "--out", str(out), "--doc", str(doc)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    result = json.loads(out.read_text())
    ss = result["pipelines"]["streamscore"]
    assert "error" not in ss, ss["error"]
    assert ss["sustainable_per_s"] == 200
    assert [p["label"] for p in ss["phases"]] == ["50%", "80%"]
    for phase in ss["phases"]:
        assert phase["done"] > 0
        lat = phase["latency_fetch_to_mongo_ack"]
        assert lat["n"] > 0
        assert 0 < lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"] <= lat["max_ms"] < 60_000
        for role in ("poller", "processor", "sink"):
            assert phase["cpu"][role]["cpu_s"] > 0
        assert phase["pipeline_cpu_ms_per_1000"] > 0
        assert all(phase["rss_end"][r] > 0 for r in ("poller", "processor", "sink"))
    timeline = ss["timeline"]
    assert len(timeline["t"]) >= 10 and max(timeline["done"]) > 0
    assert {t["target"][:20] for t in result["comparison"]["targets"]}
    assert ss["exit_codes"]["processor"] is not None

    text = doc.read_text()
    assert "## Someone else's section\n\nkept" in text
    assert "## End-to-end harness" in text and "| streamscore | 200" in text
    assert (tmp_path / "bench-e2e-latency.png").stat().st_size > 1000
