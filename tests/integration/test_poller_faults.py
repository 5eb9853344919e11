"""Issue 3: one test per fault of the demo API. Whatever the API does, the set of ids in
raw.<source> equals the set it served (its ledger), and dead letters account for every bad record."""

from __future__ import annotations

import pytest

from streamscore import metrics
from tests.integration.poller_support import demo, dlq_letters, poll_to_end, raw_ids

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("stack")]


def counter(metric, **labels) -> float:
    return metric.labels(**labels)._value.get()


def assert_ledger_equals_topic(api, settings, name) -> list[str]:
    ids = raw_ids(settings, name)
    served = api.ledger.ids()
    assert served, "the API served nothing"
    assert set(ids) == set(served)
    return ids


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_throttled_no_request_before_the_retry_after_deadline(make_settings, form):
    faults = {"throttle": {"every": 4, "after": 1}, "retry_after_s": 1, "retry_after_form": form}
    api, settings, name, _ = await poll_to_end(make_settings, demo(1200, faults=faults), page_size=200)
    assert_ledger_equals_topic(api, settings, name)
    log = list(api.ledger.requests)
    throttled = [r for r in log if r["status"] == 429]
    assert len(throttled) >= 2
    for r in throttled:
        later = [x["t"] for x in log if x["n"] > r["n"]]
        assert later, "the poller gave up after a 429"
        assert min(later) >= r["not_before"] - 0.005, f"request {min(later) - r['not_before']:.3f}s early"
    assert counter(metrics.POLLER_THROTTLED, source=name, cause="retry-after") > 0.5
    assert counter(metrics.POLLER_RETRIES, source=name, reason="429") == len(throttled)


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_retried(make_settings, status):
    faults = {"error": {"every": 3, "after": 1}, "error_status": status}
    api, settings, name, _ = await poll_to_end(make_settings, demo(1500, faults=faults))
    assert_ledger_equals_topic(api, settings, name)
    assert api.ledger.faults["error"] >= 2
    assert counter(metrics.POLLER_REQUESTS, source=name, status=str(status)) == api.ledger.faults["error"]


async def test_slow_responses_time_out_and_are_retried(make_settings):
    faults = {"slow": {"every": 4, "after": 1}, "slow_s": 1.5}
    api, settings, name, _ = await poll_to_end(
        make_settings, demo(1000, faults=faults), read_timeout_s=0.4, total_timeout_s=0.8
    )
    assert_ledger_equals_topic(api, settings, name)
    assert counter(metrics.POLLER_RETRIES, source=name, reason="timeout") >= 1


async def test_dropped_connections_are_retried(make_settings):
    # two in a row: aiohttp itself retries a GET once when a kept-alive connection drops
    faults = {"drop": {"every": 5, "after": 1, "burst": 2}}
    api, settings, name, _ = await poll_to_end(make_settings, demo(1500, faults=faults))
    assert_ledger_equals_topic(api, settings, name)
    assert api.ledger.faults["drop"] >= 4
    assert counter(metrics.POLLER_RETRIES, source=name, reason="disconnect") >= 1


async def test_truncated_json_is_fetched_again(make_settings):
    faults = {"truncate": {"every": 3, "after": 1}}
    api, settings, name, _ = await poll_to_end(make_settings, demo(1500, faults=faults))
    assert_ledger_equals_topic(api, settings, name)
    assert counter(metrics.POLLER_RETRIES, source=name, reason="parse") == api.ledger.faults["truncate"]
    assert dlq_letters(settings, name) == []


async def test_a_page_that_never_parses_is_quarantined_then_retried(make_settings):
    # requests 3..5 truncated: parse_attempts=3 are spent on one page, which goes to the DLQ
    faults = {"truncate": {"every": 1000, "after": 2, "burst": 3}}
    api, settings, name, _ = await poll_to_end(make_settings, demo(1000, faults=faults), parse_attempts=3)
    assert_ledger_equals_topic(api, settings, name)
    letters = dlq_letters(settings, name)
    assert len(letters) == 1
    headers, value = letters[0]
    assert headers["stage"] == "http-parse"
    assert headers["http.status"] == "200"
    assert headers["http.url"].startswith("http://127.0.0.1:") and "cursor=" in headers["http.url"]
    assert headers["attempt"] == "3"
    assert value.startswith(b'{"data":[') and len(value) < 200 * 400
    assert counter(metrics.POLLER_FAILURES, source=name, reason="http-parse") == 1
    assert counter(metrics.DLQ_RECORDS, source=name, stage="http-parse") == 1


async def test_overlapping_pages_lose_nothing(make_settings):
    faults = {"overlap": {"every": 2, "after": 0}, "overlap_records": 7}
    api, settings, name, _ = await poll_to_end(make_settings, demo(1500, faults=faults))
    ids = assert_ledger_equals_topic(api, settings, name)
    assert len(ids) > len(set(ids))  # the overlap is published again: duplicates are allowed


@pytest.mark.parametrize("kind", ["cursor", "page"])
async def test_repeated_pages_trip_the_no_progress_guard(make_settings, kind):
    faults = {"repeat": {"every": 4, "after": 2}}
    api, settings, name, _ = await poll_to_end(make_settings, demo(1500, faults=faults), pagination=kind)
    assert_ledger_equals_topic(api, settings, name)
    assert api.ledger.faults["repeat"] >= 2
    assert counter(metrics.POLLER_FAILURES, source=name, reason="no-progress") == api.ledger.faults["repeat"]


async def test_records_that_are_not_objects_or_lack_an_id_go_to_the_dlq(make_settings):
    faults = {"non_object": {"every": 3, "after": 0}, "missing_id": {"every": 3, "after": 1}}
    api, settings, name, _ = await poll_to_end(make_settings, demo(1500, faults=faults))
    assert_ledger_equals_topic(api, settings, name)
    letters = dlq_letters(settings, name)
    stages = [h["stage"] for h, _ in letters]
    assert stages == ["extract"] * len(letters)
    bad = api.ledger.bad_records
    assert sum(1 for _, v in letters if v == b'"not an object"') == bad["non_object"] >= 2
    assert sum(1 for _, v in letters if v.startswith(b'{"customer_id"')) == bad["missing_id"] >= 2
    assert all("http.url" in h and h["http.status"] == "200" for h, _ in letters)


async def test_spent_attempts_cool_down_and_recover(make_settings):
    # 8 errors in a row with 3 attempts per request: the poller gives up twice, counts it,
    # cools down, and still delivers everything
    faults = {"error": {"every": 1000, "after": 2, "burst": 8}}
    api, settings, name, _ = await poll_to_end(
        make_settings, demo(1000, faults=faults), retry_attempts=3, failure_cooldown_s=0.3
    )
    assert_ledger_equals_topic(api, settings, name)
    assert counter(metrics.POLLER_FAILURES, source=name, reason="5xx") >= 2


@pytest.mark.parametrize("fault", ["non_object", "missing_id"])
async def test_a_bad_record_in_an_idle_page_is_dead_lettered_once(make_settings, fault):
    # 400 records in pages of 200: request 3 asks past the end and gets only the bad record
    faults = {fault: {"every": 1000, "after": 2}}
    api, settings, name, _ = await poll_to_end(make_settings, demo(400, faults=faults), idle_polls=4)
    assert_ledger_equals_topic(api, settings, name)
    assert api.ledger.bad_records == {fault: 1}
    letters = dlq_letters(settings, name)
    assert [h["stage"] for h, _ in letters] == ["extract"]
    assert counter(metrics.POLLER_FAILURES, source=name, reason="no-progress") == 0
