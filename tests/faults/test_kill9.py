"""Fault 1: kill -9 of the poller, then the processor, then the sink, each mid-stream, each restarted.

The demo API streams records while the stages are killed one after the other (each while records
are still arriving), and restarted a second later. At the end the ledger invariant holds
(tests/faults/harness.py): every served record is in MongoDB exactly once per model version,
the DLQ holds exactly the invalid demo records, nothing waits in any consumer group.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest_faults import make_pipeline, report
from tests.faults.harness import PipelineConfig

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]
__all__ = ["make_pipeline"]

CONFIG = PipelineConfig(backlog=300, rate_per_s=100.0, max_records=9000)


def test_kill_9_of_each_process_mid_stream_then_restart_keeps_the_ledger_invariant(make_pipeline) -> None:
    p = make_pipeline(CONFIG)
    started = time.monotonic()
    up = p.start_streaming()
    total = CONFIG.max_records
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

    drained = p.wait_drained(240)
    result = p.assert_invariant()
    report(
        "kill -9 poller/processor/sink",
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
