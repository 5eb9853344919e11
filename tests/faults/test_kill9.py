"""Fault 1: kill -9 of the poller, the processor and the sink mid-stream, then restarts.

The demo API streams records while the stages are killed and restarted a second later. Default
variant: all three at the same moment (one recovery, so ``make test`` stays short); ``soak``
variant: one after the other, each once the previous one is back and records flow again. At the
end the ledger invariant holds (tests/faults/harness.py): every served record is in MongoDB
exactly once per model version, the DLQ holds exactly the invalid demo records, nothing waits in
any consumer group.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest_faults import make_pipeline, report
from tests.faults.harness import PipelineConfig

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]
__all__ = ["make_pipeline"]

CONFIG = PipelineConfig(backlog=300, rate_per_s=100.0, max_records=6000)
SEQUENTIAL = PipelineConfig(backlog=300, rate_per_s=100.0, max_records=9000)


def test_kill_9_of_all_stages_at_once_mid_stream_keeps_the_ledger_invariant(make_pipeline) -> None:
    p = make_pipeline(CONFIG)
    started = time.monotonic()
    up = p.start_streaming()
    stages = [p.poller, p.processor, p.sink]
    p.wait_until("records flowing", lambda: p.stored() >= 500, 180, p.children())
    assert p.served() < CONFIG.max_records, "killed too late: the stream was over"
    for child in stages:
        child.kill9()
    killed = time.monotonic()
    time.sleep(1.0)
    p.start(*stages)
    back = p.wait_until("every stage back", lambda: all(_working(p, c) for c in stages), 180, p.children())
    drained = p.wait_drained(300)
    result = p.assert_invariant()
    report(
        "kill -9 of all stages at once",
        up_s=up,
        back_s=back,
        killed_after_s=killed - started,
        drain_s=drained,
        total_s=time.monotonic() - started,
        **result,
    )


@pytest.mark.soak
def test_kill_9_of_each_stage_in_turn_mid_stream_keeps_the_ledger_invariant(make_pipeline) -> None:
    p = make_pipeline(SEQUENTIAL)
    started = time.monotonic()
    up = p.start_streaming()
    total = SEQUENTIAL.max_records
    down_s: dict[str, float] = {}

    # the sink last: its restart waits out the dead member's session (Faust's 60 s) and re-writes
    # the uncommitted batches as upserts, which FerretDB takes slowly
    for child in (p.poller, p.processor, p.sink):
        base = p.stored(), p.served()
        p.wait_until(
            f"progress before killing {child.name}",
            lambda base=base: p.stored() >= base[0] + 100 and p.served() >= base[1] + 100,
            180,
            p.children(),
        )
        assert p.served() < total, f"{child.name} killed too late: the stream was over"
        child.kill9()
        killed = time.monotonic()
        time.sleep(1.0)
        child.start()
        p.wait_until(f"{child.name} ready again", lambda c=child: _working(p, c), 180, p.children())
        down_s[child.name] = time.monotonic() - killed

    drained = p.wait_drained(300)
    result = p.assert_invariant()
    report(
        "kill -9 poller/processor/sink in turn",
        up_s=up,
        **{f"{k}_back_s": v for k, v in down_s.items()},
        drain_s=drained,
        total_s=time.monotonic() - started,
        **result,
    )


def _working(p, child) -> bool:  # type: ignore[no-untyped-def]
    if child is p.poller:
        return p.poller_started()
    return p.ready(child)
