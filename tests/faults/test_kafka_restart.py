"""Fault 4: the Kafka broker restarted mid-stream, first cleanly (SIGTERM, controlled shutdown), then
with kill -9, while the demo API keeps serving.

Asserts: no stage process exits (they wait and retry), and once Kafka is back and everything
drained the ledger invariant holds: every record the API served (acknowledged upstream) is in
MongoDB exactly once per model version, the DLQ holds only the invalid demo records.
"""

from __future__ import annotations

import time

import pytest

from tests.faults import stack_control
from tests.faults.conftest_faults import make_pipeline, report, stack_restored
from tests.faults.harness import PipelineConfig

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]
__all__ = ["make_pipeline", "stack_restored"]

CONFIG = PipelineConfig(backlog=300, rate_per_s=100.0, max_records=7500)
DOWN_S = 5.0


def test_kafka_restarted_clean_and_with_kill_9_loses_and_doubles_nothing(
    make_pipeline, stack_restored
) -> None:
    p = make_pipeline(CONFIG)
    started = time.monotonic()
    p.start_streaming()
    stages = [p.poller, p.processor, p.sink]
    timings: dict[str, float] = {}
    for how in ("clean", "kill9"):
        base = p.stored()
        p.wait_until(
            f"records flowing before the {how} restart", lambda b=base: p.stored() >= b + 300, 180, stages
        )
        assert p.served() < CONFIG.max_records, "Kafka restarted too late: the stream was over"
        timings[f"{how}_stop_s"] = stack_control.stop("kafka", kill9=how == "kill9")
        served_at_stop = p.served()
        time.sleep(DOWN_S)
        timings[f"{how}_start_s"] = stack_control.start("kafka")
        down_for = time.monotonic() - started
        dead = [c.name for c in stages if not c.alive]
        assert not dead, f"exited while Kafka was down ({how}): {dead}\n{p.logs()}"
        back = p.stored()
        p.wait_until(
            f"records flowing again after the {how} restart",
            lambda b=back: p.stored() >= b + 300,
            240,
            stages,
        )
        timings[f"{how}_recovered_s"] = time.monotonic() - started - down_for
        timings[f"{how}_served_stop_to_recovery"] = p.served() - served_at_stop
    drained = p.wait_drained(300)
    result = p.assert_invariant()
    assert all(c.starts == 1 for c in stages), [(c.name, c.exits) for c in stages]
    report(
        "Kafka restarted clean + kill -9",
        drain_s=drained,
        total_s=time.monotonic() - started,
        **timings,
        **result,
    )
