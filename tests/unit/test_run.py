"""``streamscore run`` without services: which children, restart with backoff, stop, the figures."""

from __future__ import annotations

import asyncio
import sys
import time

from streamscore.pipeline_probe import Accumulator, quantile, samples
from streamscore.run import commands, wants_demo_api
from streamscore.settings import load_settings
from streamscore.supervisor import Supervisor, describe_exit


def test_the_demo_api_starts_only_when_a_source_points_at_it():
    demo = load_settings()  # the default source is the bundled demo API
    assert wants_demo_api(demo)
    assert commands(demo, None) == ["demo-api", "sink", "process", "poll"]
    localhost = load_settings(sources=[{"name": "t", "url": "http://localhost:8000/transactions"}])
    assert wants_demo_api(localhost)
    real = load_settings(sources=[{"name": "t", "url": "https://api.example.com/v1/transactions"}])
    assert not wants_demo_api(real)
    assert commands(real, None) == ["sink", "process", "poll"]
    assert commands(real, True)[0] == "demo-api" and "demo-api" not in commands(demo, False)


def test_counters_add_up_across_process_restarts():
    acc = Accumulator()
    assert acc.update("k", 10) == 10
    assert acc.update("k", 25) == 25
    assert acc.update("k", 3) == 28  # the process restarted: its counter began again at 0
    assert acc.update("k", 5) == 30


def test_quantile_interpolates_cumulative_buckets_like_prometheus():
    buckets = [(0.1, 50.0), (0.5, 90.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert quantile(buckets, 0.5) == 0.1
    assert abs((quantile(buckets, 0.7) or 0) - 0.3) < 1e-9
    assert quantile(buckets, 0.99) is not None and 0.5 < (quantile(buckets, 0.99) or 0) <= 1.0
    assert quantile([(0.1, 0.0)], 0.5) is None


def test_metrics_text_is_parsed_into_samples():
    text = (
        "# HELP streamscore_sink_documents_written_total Documents acknowledged by MongoDB.\n"
        "# TYPE streamscore_sink_documents_written_total counter\n"
        'streamscore_sink_documents_written_total{source="a"} 42.0\n'
    )
    assert list(samples(text)) == [("streamscore_sink_documents_written_total", {"source": "a"}, 42.0)]


def child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def test_a_crashed_child_is_restarted_with_backoff_and_the_reason_is_told(tmp_path):
    told: list[str] = []
    argv = {
        "crashy": child("import sys; print('boom'); sys.exit(3)"),
        "steady": child("import time; time.sleep(60)"),
    }
    sup = Supervisor(["steady", "crashy"], tmp_path, told.append, argv=argv.__getitem__)
    await sup.start()
    crashy = sup.children[1]
    deadline = time.monotonic() + 15
    while crashy.restarts < 2 and time.monotonic() < deadline:
        await sup.watch()
        await asyncio.sleep(0.1)
    assert crashy.restarts >= 2, told
    assert "crashy: exit code 3; restarting in 1s" in told[0] and "boom" in told[0]
    assert any("restarting in 2s" in t for t in told)  # the second failure waits longer
    assert sup.children[0].running and sup.children[0].restarts == 0
    outcome = await sup.stop(grace_s=5)
    assert outcome["steady"] == "killed by SIGTERM"


async def test_a_configuration_error_is_not_retried(tmp_path):
    told: list[str] = []
    sup = Supervisor(["bad"], tmp_path, told.append, argv=lambda _: child("import sys; sys.exit(2)"))
    await sup.start()
    deadline = time.monotonic() + 10
    while not sup.config_error and time.monotonic() < deadline:
        await sup.watch()
        await asyncio.sleep(0.1)
    assert sup.config_error and sup.children[0].restarts == 0
    assert "not restarting" in told[0]


async def test_stop_kills_a_child_that_ignores_sigterm_after_the_grace_period(tmp_path):
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ok', flush=True)"
    code += "; time.sleep(60)"
    sup = Supervisor(["stubborn"], tmp_path, print, argv=lambda _: child(code))
    await sup.start()
    log = tmp_path / "stubborn.log"
    deadline = time.monotonic() + 10
    while "ok" not in log.read_text() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    started = time.monotonic()
    outcome = await sup.stop(grace_s=1)
    assert outcome == {"stubborn": "killed after 1s grace"}
    assert 1 <= time.monotonic() - started < 5


def test_exit_descriptions():
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(-9) == "killed by SIGKILL"


class FakeCollection:
    async def estimated_document_count(self) -> int:
        return 7


async def test_the_view_keeps_a_restarted_process_counts_and_rates():
    from datetime import UTC, datetime

    from streamscore.pipeline_probe import PipelineProbe

    sink_text = {"v": 0.0}

    def metrics(value: float | None) -> str:
        if value is None:  # a fresh process before its first write: no sample at all
            return "# TYPE streamscore_sink_documents_written_total counter\n"
        return (
            "# TYPE streamscore_sink_documents_written_total counter\n"
            f'streamscore_sink_documents_written_total{{source="s"}} {value}\n'
            "# TYPE streamscore_dlq_records_total counter\n"
            f'streamscore_dlq_records_total{{source="s",stage="sink-data"}} {value / 100}\n'
        )

    probe = PipelineProbe(load_settings(), datetime.now(UTC), lag_every_s=float("inf"))
    probe.collection = FakeCollection()  # type: ignore[assignment]

    async def component(name: str) -> tuple[str, bool | None, str]:
        if name != "sink":
            return name, None, ""
        return name, True, metrics(sink_text["v"])

    probe._component = component  # type: ignore[method-assign]
    try:
        for value, expected in ((100.0, 100), (250.0, 250), (None, 250), (30.0, 280)):
            sink_text["v"] = value  # type: ignore[assignment]
            snap = await probe.snapshot()
            assert snap.counts["stored"] == expected, (value, snap.counts)
        assert snap.dlq == {"sink-data": 2.8}
        assert snap.documents == 7 and snap.ready["sink"] is True and snap.ready["poller"] is None
    finally:
        await probe.close()
