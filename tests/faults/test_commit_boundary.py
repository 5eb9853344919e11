"""Faults 2 and 7 (short): the processor's commit boundary under a slow batch, SIGKILL and SIGTERM.

The input is what production gives the processor: ``raw.<source>`` written by the poller in one
Kafka transaction per page, so every partition has a transaction marker (an offset no consumer
ever sees) after each page. Faust turns such offset gaps into "acked" ranges, which is where
faust-streaming issue 606 comes from (with agent concurrency > 1, a gap merged into the acked
offsets covers a message still in flight, and the commit passes it).

- ``test_committed_offsets_reach_the_end_of_a_transactional_input``: once everything is processed,
  the committed offsets reach the end of every raw partition (nothing readable waits), within a
  few commit intervals.
- ``test_slow_in_flight_batch_then_sigkill_never_commits_past_it`` (issue 606's case): one batch
  is held in flight (test hook), the worker is SIGKILLed; while it was held, and at the kill, no
  partition's committed offset passed a message without an output in ``clean.<source>`` or the
  DLQ; after a restart every record has its output.
- ``test_sigterm_mid_batch_exits_0_within_the_grace_and_loses_nothing``: SIGTERM while a batch is
  held: exit code 0 within ``GRACE_S``, the held batch is not committed, the restart completes it.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from streamscore.topics import clean_topic, dlq_topic, raw_topic
from tests.faults.conftest_faults import make_pipeline, report
from tests.faults.harness import Pipeline, PipelineConfig, hook_events

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]
__all__ = ["make_pipeline"]

# backlog only: the poller reads it in pages of 50 (a transaction, hence a marker, per page)
CONFIG = PipelineConfig(backlog=1500, rate_per_s=0.0, max_records=1500, page_size=50)
GRACE_S = 15.0
COMMIT_WAIT_S = 20.0  # Faust commits every 2.8 s


def outputs(p: Pipeline) -> set[str]:
    """Record ids with an output of the clean stage: a clean record or a dead letter."""
    keys = {m.key().decode() for m in p.read_topic(clean_topic(p.source))}
    keys |= {m.key().decode() for m in p.read_topic(dlq_topic(p.source)) if m.key()}
    return keys


def raw_offsets(p: Pipeline) -> dict[int, list[tuple[int, str]]]:
    by_partition: dict[int, list[tuple[int, str]]] = {}
    for m in p.read_topic(raw_topic(p.source)):
        by_partition.setdefault(m.partition(), []).append((m.offset(), m.key().decode()))
    return by_partition


def passed_unprocessed(p: Pipeline) -> dict[int, list[tuple[int, str]]]:
    """Per partition, the raw records below the committed offset that have no output yet."""
    committed = p.committed(p.processor_group, raw_topic(p.source))
    done = outputs(p)
    bad: dict[int, list[tuple[int, str]]] = {}
    for partition, records in raw_offsets(p).items():
        below = [(o, k) for o, k in records if o < committed.get(partition, -1) and k not in done]
        if below:
            bad[partition] = below
    return bad


def hold_hook(p: Pipeline, seconds: float) -> list[dict[str, Any]]:
    return [
        {
            "agent": f"clean-score-{p.source}",  # the default, fused agent on raw
            "action": "sleep",
            "seconds": seconds,
            "partition": 0,
            "min_offset": 300,
            "once_file": str(p.tmp / "held-once"),
        }
    ]


def start_with_raw(p: Pipeline, processor_hooks: list[dict[str, Any]] | None = None) -> None:
    """API + poller fill raw.<source> (pages as transactions), then the processor starts."""
    p.start(p.api, p.poller)
    p.wait_until("the whole backlog in raw", lambda: _raw_complete(p), 120, [p.api, p.poller])
    if processor_hooks is not None:
        p.processors[0] = p.hooked(p.processor, processor_hooks)
    p.processor.start()


def _raw_complete(p: Pipeline) -> bool:
    if p.served() < p.config.max_records:
        return False
    return sum(len(v) for v in raw_offsets(p).values()) >= p.config.max_records


def all_processed(p: Pipeline) -> bool:
    return outputs(p) >= set(p.expected().ledger)


def test_committed_offsets_reach_the_end_of_a_transactional_input(make_pipeline) -> None:
    p = make_pipeline(CONFIG)
    start_with_raw(p)
    processed = p.wait_until("every record cleaned", lambda: all_processed(p), 180, [p.processor])
    group, topics = p.processor_group, p.processor_inputs()
    started = time.monotonic()
    waiting: dict[tuple[str, int], int] = {}
    while time.monotonic() - started < COMMIT_WAIT_S:
        waiting = p.waiting(group, topics)
        if not waiting:
            break
        time.sleep(1.0)
    assert not waiting, (
        f"{COMMIT_WAIT_S:.0f}s after processing everything, readable records still wait after the "
        f"committed offsets: {waiting} (committed: {p.committed(group, raw_topic(p.source))})"
    )
    report("commits reach the end", processed_s=processed, committed_after_s=time.monotonic() - started)


def test_slow_in_flight_batch_then_sigkill_never_commits_past_it(make_pipeline) -> None:
    p = make_pipeline(CONFIG)
    start_with_raw(p, hold_hook(p, seconds=600))
    p.wait_until("a batch held in flight", lambda: bool(_fired(p)), 120, [p.processor])
    held = _fired(p)[0]
    held_offsets = [o for part, o, _ in held["messages"] if part == 0]
    checks = 0
    watch_until = time.monotonic() + 12.0  # > 4 commit intervals while the batch is held
    while time.monotonic() < watch_until:
        bad = passed_unprocessed(p)
        assert not bad, f"committed past unprocessed records while {held_offsets[:3]}.. was held: {bad}"
        checks += 1
    committed_at_kill = p.committed(p.processor_group, raw_topic(p.source))
    p.processor.kill9()
    bad = passed_unprocessed(p)
    assert not bad, f"committed past unprocessed records at the kill: {bad}"
    assert committed_at_kill[0] <= min(held_offsets), (committed_at_kill, min(held_offsets))

    p.processor.start()  # the once-file keeps the hook from firing again
    took = p.wait_until(
        "every record cleaned after the restart", lambda: all_processed(p), 180, [p.processor]
    )
    assert not passed_unprocessed(p)
    report(
        "issue 606 case (slow batch + SIGKILL)",
        held_from_offset=min(held_offsets),
        held_records=len(held["messages"]),
        checks=checks,
        committed_p0_at_kill=committed_at_kill[0],
        recovered_s=took,
    )


def test_sigterm_mid_batch_exits_0_within_the_grace_and_loses_nothing(make_pipeline) -> None:
    p = make_pipeline(CONFIG)
    start_with_raw(p, hold_hook(p, seconds=120))
    p.wait_until("a batch held in flight", lambda: bool(_fired(p)), 120, [p.processor])
    held = _fired(p)[0]
    code, took = p.processor.stop(signal.SIGTERM, timeout_s=GRACE_S + 30)
    assert code == 0, f"SIGTERM mid-batch: exit {code}\n{p.processor.tail()}"
    assert took <= GRACE_S, f"SIGTERM mid-batch took {took:.1f}s to exit (grace {GRACE_S}s)"
    assert not [e for e in hook_events(p.hook_log) if e["event"] == "released"], "the batch was not held"
    assert not passed_unprocessed(p)
    p.processor.start()
    again = p.wait_until(
        "every record cleaned after the restart", lambda: all_processed(p), 180, [p.processor]
    )
    code2, took2 = p.processor.stop(signal.SIGINT, timeout_s=GRACE_S + 30)
    assert code2 == 0, f"SIGINT: exit {code2}"
    report(
        "SIGTERM mid-batch",
        held_records=len(held["messages"]),
        exit_code=code,
        exit_s=took,
        recovered_s=again,
        sigint_exit_s=took2,
    )


def _fired(p: Pipeline) -> list[dict[str, Any]]:
    return [e for e in hook_events(p.hook_log) if e["event"] == "fired"]
