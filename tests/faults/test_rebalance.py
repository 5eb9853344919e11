"""Fault 3: two processor workers in one consumer group; one is killed (-9) and restarted again and
again while records stream, so the group rebalances each time (the dead member's partitions move
after its session times out, come back when it rejoins).

Asserts: the surviving worker never exits, every kill happens under load, and once the stream
ended the lag of both groups returns to 0 (no readable record after any committed offset) and
the ledger invariant holds.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest_faults import make_pipeline, report
from tests.faults.harness import PipelineConfig

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]
__all__ = ["make_pipeline"]

CONFIG = PipelineConfig(backlog=200, rate_per_s=40.0, max_records=3400)
KILLS = 2


def test_one_of_two_workers_killed_repeatedly_keeps_the_invariant_and_lag_returns_to_0(make_pipeline) -> None:
    p = make_pipeline(CONFIG)
    p.processors.append(p.new_processor())
    survivor, victim = p.processors
    started = time.monotonic()
    p.start_streaming()
    back_s = []
    for n in range(KILLS):
        base = p.stored()
        p.wait_until(f"progress before kill {n + 1}", lambda b=base: p.stored() >= b + 200, 180, p.children())
        assert p.served() < CONFIG.max_records, f"kill {n + 1} came after the stream ended"
        victim.kill9()
        killed = time.monotonic()
        time.sleep(1.0)
        victim.start()
        p.wait_until(f"{victim.name} ready again", lambda: p.ready(victim), 180, p.children())
        back_s.append(time.monotonic() - killed)
    drained = p.wait_drained(420)
    result = p.assert_invariant()  # includes: nothing waiting after the committed offsets (lag 0)
    assert survivor.starts == 1 and survivor.alive, survivor.exits
    assert victim.exits == [-9] * KILLS, victim.exits
    report(
        "one of two workers killed repeatedly",
        kills=KILLS,
        back_s=[round(s, 1) for s in back_s],
        drain_s=drained,
        total_s=time.monotonic() - started,
        **result,
    )
