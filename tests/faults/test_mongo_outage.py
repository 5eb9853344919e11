"""MongoDB-wire server down for 30 s in the middle of a run: nothing lost, doubled or dead-lettered.

The whole pipeline runs (demo API producing 100 records/s, poller, processor, sink). Once records
are flowing into MongoDB, the stack's MongoDB-wire server (FerretDB) is stopped with
``deploy/local/stack.sh down mongo`` for 30 s and started again. Meanwhile the sink must retry
with backoff and commit nothing (its ``/readyz`` fails, ``/healthz`` holds, the process does not
crash), and the processor must go on cleaning and scoring. Afterwards the ledger invariant of
:mod:`tests.faults.harness` must hold: one document per valid record the API served, no
duplicate, and the DLQ holds only the records the demo data makes invalid — nothing because of
the outage.

It takes services of the stack down, so it runs under CI=true, with
STREAMSCORE_FAULTS_CONTROL_STACK=1, or against a second stack (``tests/faults/stack_control.py``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.faults import stack_control
from tests.faults.harness import Pipeline, PipelineConfig

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]
OUTAGE_S = 30.0
NOT_READY_WITHIN_S = 10.0  # a failed write or ping flips readiness well before this


def test_mongodb_outage_of_30s_loses_nothing_doubles_nothing_and_dead_letters_nothing(tmp_path: Path) -> None:
    stack_control.require_control()
    pipe = Pipeline(tmp_path, PipelineConfig(backlog=500, rate_per_s=100.0, max_records=6000))
    try:
        pipe.start()
        pipe.wait_until("records flowing into MongoDB", lambda: pipe.stored() >= 1000, 180, pipe.children())
        status, _ = pipe.sink.get("/readyz")
        assert status == 200, "the sink should be ready before the outage"

        stack_control.stop("mongo")
        down_at = time.monotonic()
        samples: list[tuple[float, int, int, int]] = []  # (t, sink readyz, sink healthz, processor readyz)
        while (t := time.monotonic() - down_at) < OUTAGE_S:
            ready, _ = pipe.sink.get("/readyz")
            alive, _ = pipe.sink.get("/healthz")
            proc_ready, _ = pipe.processor.get("/readyz")
            samples.append((t, ready, alive, proc_ready))
            time.sleep(1.0)
        scored_during = pipe.served()
        stack_control.start("mongo")

        waited = pipe.wait_drained(420)
        summary = pipe.assert_invariant()  # no loss, no duplicate, DLQ = the invalid demo records only
        print(f"drained {waited:.0f}s after the outage; {summary}")

        assert all(alive == 200 for _, _, alive, _ in samples), samples  # liveness held
        late = [(t, r) for t, r, _, _ in samples if t >= NOT_READY_WITHIN_S]
        assert late and all(r == 503 for _, r in late), f"sink /readyz during the outage: {samples}"
        assert all(p == 200 for _, _, _, p in samples), f"processor readiness during the outage: {samples}"
        assert scored_during > 1000, "the API kept serving during the outage"
        assert pipe.sink.alive and pipe.sink.starts == 1 and not pipe.sink.exits, "the sink must not crash"
        pipe.wait_until("the sink ready again", lambda: pipe.sink.get("/readyz")[0] == 200, 60)
    finally:
        stack_control.ensure_up()
        pipe.stop_all()
        pipe.drop_database()
