"""Fault 6: the schema registry down mid-run, and down while processes start.

1. Mid-run: the registry is stopped while records stream; the stages go on with the schemas they
   hold (ids in memory), so records keep reaching MongoDB.
2. Down at start, known schemas: with the registry still down, the poller, processor and sink are
   stopped and restarted; they start from the schema cache on disk (``registry.cache_dir``) and
   records keep reaching MongoDB.
3. Down at start, new source (nothing cached): a processor of another, new source waits and
   retries (alive, not ready, ``waiting_for_dependency`` logged) and becomes ready once the
   registry is back.

Then the registry comes back and the ledger invariant holds: nothing lost, nothing doubled, no
dead letter because of the outage.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.faults import stack_control
from tests.faults.conftest_faults import make_pipeline, report, stack_restored
from tests.faults.harness import PipelineConfig

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]
__all__ = ["make_pipeline", "stack_restored"]

CONFIG = PipelineConfig(backlog=300, rate_per_s=100.0, max_records=7000)


def test_registry_down_mid_run_and_at_start_loses_nothing(make_pipeline, stack_restored) -> None:
    p = make_pipeline(CONFIG)
    started = time.monotonic()
    p.start_streaming()
    stages = [p.poller, p.processor, p.sink]
    p.wait_until("records flowing", lambda: p.stored() >= 300, 180, stages)

    stop_s = stack_control.stop("registry")
    down_at = time.monotonic()
    # 1. mid-run
    base = p.stored()
    p.wait_until("records flowing with the registry down", lambda: p.stored() >= base + 500, 120, stages)

    # 2. restarts while it is down: schemas from the disk cache (SIGTERM: a clean leave, so the
    # group does not wait out a dead member's session; test_kill9 covers kill -9)
    for child in stages:
        code, _ = child.stop(signal.SIGTERM, timeout_s=60)
        assert code in (0, 75), f"{child.name}: SIGTERM gave exit {code}\n{child.tail()}"
        child.start()
    fresh = make_pipeline(CONFIG)
    fresh.processor.start()  # 3. a new source: nothing cached
    base = p.stored()
    p.wait_until(
        "records flowing after restarts with the registry down",
        lambda: p.stored() >= base + 500 and all(p.ready(c) for c in (p.processor, p.sink)),
        240,
        stages,
    )
    restarted_s = time.monotonic() - down_at
    assert fresh.processor.alive, (
        f"a new processor gave up while the registry was down:\n{fresh.processor.tail()}"
    )
    assert not fresh.ready(fresh.processor)
    assert "waiting_for_dependency" in fresh.processor.tail(20000), fresh.processor.tail()

    start_s = stack_control.start("registry")
    outage_s = time.monotonic() - down_at
    fresh_ready = fresh.wait_until(
        "the new processor ready after the registry came back",
        lambda: fresh.ready(fresh.processor),
        120,
        [fresh.processor],
    )
    drained = p.wait_drained(300)
    result = p.assert_invariant()
    assert all(len(c.exits) == 1 and c.alive for c in stages), [(c.name, c.exits) for c in stages]
    report(
        "registry down mid-run and at start",
        registry_stop_s=stop_s,
        registry_start_s=start_s,
        outage_s=outage_s,
        restarted_and_flowing_s=restarted_s,
        new_source_ready_after_s=fresh_ready,
        drain_s=drained,
        total_s=time.monotonic() - started,
        **result,
    )
