"""Issue 3: the poller's HTTP client against the in-process demo API (no Kafka needed)."""

from __future__ import annotations

import time

import pytest

from producers.demo_api.server import serving
from producers.http_client import HttpGaveUp, HttpRefused, SourceClient, auth_headers
from streamscore import metrics
from streamscore.settings import DemoApiSettings, SourceSettings
from tests.conftest import unique


def api(**faults) -> DemoApiSettings:
    return DemoApiSettings(port=0, backlog=50, faults=faults)


def src(url: str, **kw) -> SourceSettings:
    base = {"backoff_initial_s": 0.01, "backoff_cap_s": 0.02, "rate_limit_per_s": 1000.0}
    return SourceSettings(name=unique("h"), url=f"{url}/transactions", **(base | kw))


def count(metric, **labels) -> float:
    return metric.labels(**labels)._value.get()


async def test_retries_5xx_then_succeeds_and_counts():
    async with serving(api(error={"every": 100, "burst": 2})) as (server, url):
        source = src(url, retry_attempts=3)
        client = SourceClient(source)
        try:
            resp = await client.get(source.url, {"limit": "10"})
        finally:
            await client.close()
        assert resp.status == 200 and b"txn_000000000001" in resp.body
        assert server.ledger.statuses[503] == 2
        assert count(metrics.POLLER_RETRIES, source=source.name, reason="5xx") == 2
        assert count(metrics.POLLER_REQUESTS, source=source.name, status="503") == 2


async def test_bounded_attempts_end_in_a_clear_error_and_a_counter():
    async with serving(api(error={"every": 1})) as (server, url):
        source = src(url, retry_attempts=4)
        client = SourceClient(source)
        try:
            with pytest.raises(HttpGaveUp, match=r"gave up after 4 attempts.*HTTP 503"):
                await client.get(source.url)
        finally:
            await client.close()
        assert len(server.ledger.requests) == 4
        assert count(metrics.POLLER_FAILURES, source=source.name, reason="5xx") == 1


async def test_a_4xx_is_not_retried():
    async with serving(DemoApiSettings(port=0, backlog=5, token="t")) as (server, url):
        source = src(url)
        client = SourceClient(source)
        try:
            with pytest.raises(HttpRefused) as refused:
                await client.get(source.url)
        finally:
            await client.close()
        assert refused.value.status == 401 and server.ledger.statuses[401] == 1


async def test_retry_after_holds_the_retry_and_counts_the_wait():
    async with serving(api(throttle={"every": 100}, retry_after_s=1)) as (server, url):
        source = src(url)
        client = SourceClient(source)
        start = time.monotonic()
        try:
            await client.get(source.url)
        finally:
            await client.close()
        log = list(server.ledger.requests)
        assert [r["status"] for r in log] == [429, 200]
        assert log[1]["t"] >= log[0]["not_before"]
        assert time.monotonic() - start >= 1.0
        assert count(metrics.POLLER_THROTTLED, source=source.name, cause="retry-after") >= 0.9


async def test_connect_errors_are_retried_then_given_up():
    source = SourceSettings(
        name=unique("h"), url="http://127.0.0.1:9/x", retry_attempts=2, backoff_initial_s=0.01
    )
    client = SourceClient(source)
    try:
        with pytest.raises(HttpGaveUp) as gave_up:
            await client.get(source.url)
    finally:
        await client.close()
    assert gave_up.value.reason == "connect"
    assert count(metrics.POLLER_RETRIES, source=source.name, reason="connect") == 1


def test_auth_headers(tmp_path):
    assert auth_headers(SourceSettings(auth="bearer", token="abc")) == {"Authorization": "Bearer abc"}
    (tmp_path / "tok").write_text("from-file\n")
    s = SourceSettings(auth="api-key", token_file=tmp_path / "tok", api_key_header="X-Key")
    assert auth_headers(s) == {"X-Key": "from-file"}
    with pytest.raises(ValueError, match="needs token"):
        SourceSettings(auth="bearer")
    assert "abc" not in repr(SourceSettings(auth="bearer", token="abc"))
