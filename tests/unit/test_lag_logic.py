"""Lag arithmetic, the JSON report, the exporter's gauges and the non-blocking backlog check."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from streamscore import metrics
from streamscore.errors import TransientError
from streamscore.exporter import LagGauges
from streamscore.health import ProgressWatch
from streamscore.lag import BacklogCheck, PartitionLag, next_offset, pipeline_groups, report
from streamscore.settings import load_settings


@pytest.mark.parametrize(
    ("committed", "start", "end", "expected"),
    [
        (None, 0, 10, (0, "no-commit", 0)),  # never committed: everything retained is waiting
        (None, 4, 10, (4, "no-commit", 0)),
        (7, 0, 10, (7, "ok", 0)),
        (10, 0, 10, (10, "ok", 0)),  # caught up
        (2, 6, 10, (6, "expired", 4)),  # retention deleted 2..5 before they were read
        (15, 0, 10, (0, "reset", 0)),  # past the end (topic recreated): earliest again
        (-1001, 3, 10, (3, "no-commit", 0)),  # librdkafka's OFFSET_INVALID
    ],
)
def test_next_offset(committed: int | None, start: int, end: int, expected: tuple[int, str, int]) -> None:
    assert next_offset(committed, start, end) == expected


@pytest.mark.parametrize(
    ("processor", "inputs"),
    [
        ({}, ["raw.a", "raw.b"]),  # fused (default): the processor's group reads raw only
        ({"fused": False}, ["raw.a", "clean.a", "raw.b", "clean.b"]),
        ({"stages": ["score"]}, ["clean.a", "clean.b"]),
        ({"stages": ["clean"]}, ["raw.a", "raw.b"]),
    ],
)
def test_pipeline_groups_name_the_topics_each_group_reads(
    processor: dict[str, Any], inputs: list[str]
) -> None:
    s = load_settings(sources=[{"name": "a"}, {"name": "b"}], processor=processor)
    assert pipeline_groups(s) == {
        "streamscore-processor": inputs,
        "streamscore-sink": ["predictions.a", "predictions.b"],
    }


def row(group: str, part: int, lag: int, seconds: float | None) -> PartitionLag:
    return PartitionLag(group, "t", part, 0, 0, lag, lag, seconds, "ok")


def test_report_sums_messages_and_takes_max_seconds() -> None:
    doc = report([row("g", 0, 5, 3.0), row("g", 1, 7, 9.5), row("h", 0, 0, 0.0)])
    assert doc["groups"]["g"] == {"lag_messages": 12, "lag_seconds": 9.5, "partitions": 2}
    assert doc["groups"]["h"] == {"lag_messages": 0, "lag_seconds": 0.0, "partitions": 1}
    assert len(doc["partitions"]) == 3 and doc["partitions"][1]["lag_seconds"] == 9.5
    # an unreadable oldest record makes the group's seconds unknown, not 0
    assert report([row("g", 0, 5, None), row("g", 1, 1, 2.0)])["groups"]["g"]["lag_seconds"] is None


def gauge(m: object, *labels: str) -> float | None:
    for family in m.collect():  # type: ignore[attr-defined]
        for sample in family.samples:
            if tuple(sample.labels.values()) == labels:
                return float(sample.value)
    return None


def test_gauges_follow_measurements_and_drop_vanished_partitions() -> None:
    gauges = LagGauges()
    gauges.update([row("gx", 0, 5, 3.0), row("gx", 1, 2, None)])
    assert gauge(metrics.CONSUMER_LAG_MESSAGES, "gx", "t", "0") == 5
    assert gauge(metrics.CONSUMER_LAG_SECONDS, "gx", "t", "0") == 3.0
    assert gauge(metrics.CONSUMER_LAG_SECONDS, "gx", "t", "1") is None  # unknown: not set to 0
    gauges.update([row("gx", 0, 0, 0.0)])
    assert gauge(metrics.CONSUMER_LAG_MESSAGES, "gx", "t", "0") == 0
    assert gauge(metrics.CONSUMER_LAG_MESSAGES, "gx", "t", "1") is None  # removed


class FakeProbe:
    """Stands in for the broker in this unit test (the real one is in tests/integration)."""

    def __init__(self, lags: list[int], delay_s: float = 0.0, fail: bool = False) -> None:
        self.lags, self.delay_s, self.fail = lags, delay_s, fail
        self.calls = 0
        self.release = threading.Event()

    def measure(self, groups: list[str], with_seconds: bool = True) -> list[PartitionLag]:
        self.calls += 1
        if self.delay_s:
            self.release.wait(self.delay_s)
        if self.fail:
            raise TransientError("broker down")
        return [row(groups[0], i, lag, None) for i, lag in enumerate(self.lags)]


def test_backlog_check_never_blocks_and_caches() -> None:
    check = BacklogCheck(load_settings(), "g", ttl_s=60)
    probe = FakeProbe([0, 3], delay_s=5)
    check._probe = probe  # type: ignore[assignment]
    started = time.monotonic()
    assert check() is False  # first answer: no evidence yet, returned at once
    assert time.monotonic() - started < 0.5
    probe.release.set()
    deadline = time.monotonic() + 5
    while check() is False and time.monotonic() < deadline:
        time.sleep(0.01)
    assert check() is True
    assert probe.calls == 1  # cached for ttl_s


def test_backlog_check_keeps_last_answer_when_broker_fails() -> None:
    check = BacklogCheck(load_settings(), "g", ttl_s=0)
    check._probe = FakeProbe([4])  # type: ignore[assignment]
    assert check.refresh() is True
    check._probe = FakeProbe([], fail=True)  # type: ignore[assignment]
    assert check.refresh() is True


def test_progress_watch_with_backlog_check_reports_stall() -> None:
    check = BacklogCheck(load_settings(), "g")
    check._probe = FakeProbe([7])  # type: ignore[assignment]
    check.refresh()
    watch = ProgressWatch("sink", stall_after_s=30, backlog=check)
    watch.last_progress = time.time() - 31
    ok, why = watch.check()
    assert not ok and "stalled" in why
    check._probe = FakeProbe([0])  # type: ignore[assignment]
    check.refresh()
    assert watch.check() == (True, "ok")  # idle and caught up is not stalled
