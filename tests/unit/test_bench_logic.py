"""The end-to-end harness's arithmetic: lag verdicts, percentiles, stamps, profiles, targets, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bench import stamps
from bench.harness import lag_verdict, percentiles, summarise_stacks
from bench.report import BEGIN, END, compare, section, write_report


def samples(lags: list[float], rate: float, dt: float = 1.0) -> list[dict[str, Any]]:
    done = 0.0
    out = []
    for i, lag in enumerate(lags):
        available = rate * i * dt
        done = available - lag
        out.append(
            {"t": i * dt, "lag": lag, "written": done, "dlq": 0.0, "available": available, "fetched": done}
        )
    return out


def test_a_flat_lag_passes_and_a_growing_one_fails() -> None:
    assert lag_verdict(samples([300, 310, 290, 305, 300, 295], rate=500), 500)["ok"]
    growing = lag_verdict(samples([300, 500, 700, 900, 1100, 1300], rate=500), 500)
    assert not growing["ok"] and growing["lag_slope_per_s"] == 200
    too_deep = lag_verdict(samples([5000] * 6, rate=500), 500)  # flat but over 3 s of records
    assert not too_deep["ok"]
    assert not lag_verdict(samples([1, 1], rate=10), 10)["ok"]  # too few samples to judge


def test_percentiles_in_ms_and_ordered() -> None:
    values = np.linspace(0.001, 1.0, 1000)
    p = percentiles(values)
    assert p["n"] == 1000 and p["max_ms"] == 1000.0
    assert p["p50_ms"] < p["p95_ms"] < p["p99_ms"] < p["max_ms"]
    assert abs(p["p50_ms"] - 500.5) < 1
    assert percentiles(np.empty(0)) == {"n": 0}


def test_recorder_and_taps_see_what_the_metrics_see(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, Counter, Histogram

    registry = CollectorRegistry()
    hist = Histogram("h_seconds", "h", ["source"], registry=registry)
    counter = Counter("c_total", "c", ["agent"], registry=registry)
    recorder = stamps.Recorder(tmp_path, "role", interval_s=60)
    tapped_h = stamps.MetricTap(hist, "e2e", recorder.observe)
    tapped_c = stamps.MetricTap(counter, "out.{agent}", recorder.count)
    for v in (0.1, 0.2, 0.3):
        tapped_h.labels(source="s").observe(v)
    tapped_c.labels(agent="score").inc(5)
    recorder.flush()
    series = stamps.read_series(tmp_path, "e2e")
    assert series[:, 1].tolist() == [0.1, 0.2, 0.3]
    assert stamps.read_counters(tmp_path) == {"out.score": 5.0}
    assert registry.get_sample_value("h_seconds_count", {"source": "s"}) == 3  # still counted
    assert registry.get_sample_value("c_total", {"agent": "score"}) == 5


def test_profile_summary_self_and_inclusive(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(
        "main (app.py:1);work (app.py:5);encode (/venv/site-packages/fastavro/w.py:9) 30\n"
        "main (app.py:1);work (app.py:5) 10\n"
        "main (app.py:1);idle (asyncio/events.py:8) 60\n"
    )
    out = summarise_stacks(raw)
    assert out["samples"] == 100
    assert dict(out["self_pct"])["asyncio/events.py:idle"] == 60.0
    assert dict(out["self_pct"])["fastavro/w.py:encode"] == 30.0
    assert dict(out["inclusive_pct"])["app.py:work"] == 40.0
    assert dict(out["inclusive_pct"])["app.py:main"] == 100.0


def phase(label: str, p99: float, cpu: float) -> dict[str, Any]:
    lat = {"n": 100, "p50_ms": p99 / 2, "p95_ms": p99 * 0.9, "p99_ms": p99, "max_ms": round(p99 * 1.1, 1)}
    return {
        "label": label,
        "rate": 100.0,
        "latency_fetch_to_mongo_ack": lat,
        "pipeline_cpu_ms_per_1000": cpu,
        "pipeline_marginal_cpu_ms_per_1000": cpu,
        "cpu": {"poller": {"cpu_s": 1.0, "cpu_s_per_1000": cpu / 1000}},
    }


def document(soak_s: float) -> dict[str, Any]:
    ss = {
        "sustainable_per_s": 900,
        "phases": [phase("50%", 200.0, 50.0), phase("80%", 300.0, 70.0)],
        "soak": {"rss_growth_pct": {"processor": 3.0}, "seconds": soak_s, "rate": 450.0},
        "rss_peak": {"processor": 2**27},
    }
    return {
        "tag": "t1",
        "date": "2026-01-01",
        "command": "make bench",
        "machine": {"cpu": "c", "cores": 2, "memory_gib": 24, "python": "3.11", "platform": "p"}
        | {"load_average_start": [0.5], "versions": {"x": "1"}},
        "pipelines": {
            "streamscore": ss,
            "quix": {"sustainable_per_s": 500},
            "floor": {"sustainable_per_s": 2000},
        },
    }


def test_targets_are_judged_on_the_run() -> None:
    comp = compare(document(soak_s=600))
    assert comp["ratios"] == {"quix": 1.8, "faststream": None, "floor": 0.45}
    met = {t["target"].split(" ")[0] + t["target"][-12:]: t["met"] for t in comp["targets"]}
    assert list(met.values()) == [True, False, True, False, True]  # 1.5x quix, 0.5x floor, p99, CPU, RSS
    short_soak = compare(document(soak_s=60))["targets"][-1]
    assert short_soak["met"] is None and "no verdict" in short_soak["evidence"]


def test_report_section_is_replaced_and_other_sections_kept(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\n## Poller\n\nmine\n\n{BEGIN}\nold\n{END}\n\n## Sink\n\ntheirs\n")
    d = document(soak_s=600)
    d["comparison"] = compare(d)
    result = tmp_path / "r.json"
    result.write_text(json.dumps(d))
    write_report(d, result, doc)
    text = doc.read_text()
    assert "## Poller\n\nmine" in text and "## Sink\n\ntheirs" in text and "\nold\n" not in text
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert "| streamscore | 900 | 50% = 100/s | 100 | 180 | 200 | 220 | 50.0 (50) |" in section(d, result, {})
