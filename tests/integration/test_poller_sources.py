"""Issue 3: incremental polling of a live API, several sources in one process, token auth."""

from __future__ import annotations

import asyncio

import pytest

from producers.demo_api.server import serving
from streamscore import metrics
from tests.conftest import unique
from tests.integration.poller_support import PollerRun, demo, done, free_port, raw_ids, source, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("stack")]


async def test_incremental_polling_follows_new_records_as_they_appear(make_settings):
    port = free_port()
    name = unique("live")
    settings = make_settings(
        sources=[source(name, f"http://127.0.0.1:{port}", page_size=500, poll_interval_s=0.2)]
    )
    # the poller is ready (topics, contract, cursors) before the API starts: records then keep
    # appearing for 3 s after the backlog, while the poller comes back for them
    run = PollerRun(settings)
    await run.prepare()
    live = demo(100, rate_per_s=400.0, max_records=1300).model_copy(update={"port": port})
    async with serving(live) as (api, _), run.started():
        poller = run.pollers[0]
        await wait_for(lambda: done(api, poller, 1300), 25, "all records committed")
    ids = raw_ids(settings, name)
    assert set(ids) == set(api.ledger.ids()) and len(set(ids)) == 1300
    assert len(ids) == 1300  # partial pages re-read at the same cursor publish nothing twice
    caught_up_polls = [r for r in api.ledger.requests if "cursor" in r["query"]]
    assert len(caught_up_polls) >= 5  # it came back for newer records, cursor in hand
    # event times of a live API are "now": the cursor lag stays small
    assert metrics.POLLER_CURSOR_LAG.labels(source=name)._value.get() < 5.0
    assert poller.state.committed.records == 1300


async def test_several_sources_each_with_its_own_cursor_topic_and_auth(make_settings):
    async with (
        serving(demo(1200, seed=1, token="bearer-secret")) as (api_a, url_a),
        serving(demo(900, seed=2, token="key-secret")) as (api_b, url_b),
    ):
        a, b = unique("ma"), unique("mb")
        settings = make_settings(
            sources=[
                source(a, url_a, pagination="cursor", auth="bearer", token="bearer-secret"),
                source(b, url_b, pagination="offset", auth="api-key", token="key-secret", page_size=150),
            ]
        )
        async with PollerRun(settings) as run:
            pa, pb = run.pollers
            await wait_for(lambda: done(api_a, pa, 1200) and done(api_b, pb, 900), 25, "both sources done")
        assert set(raw_ids(settings, a)) == set(api_a.ledger.ids())
        assert set(raw_ids(settings, b)) == set(api_b.ledger.ids())
        assert api_a.ledger.statuses.get(401) is None and api_b.ledger.statuses.get(401) is None
        assert pa.state.committed.pagination == "cursor" and pb.state.committed.position == "900"


async def test_a_wrong_token_is_refused_without_a_crash_loop(make_settings):
    async with serving(demo(100, token="right")) as (api, url):
        name = unique("auth")
        settings = make_settings(
            sources=[source(name, url, auth="bearer", token="wrong", failure_cooldown_s=5.0)]
        )
        async with PollerRun(settings) as run:
            poller = run.pollers[0]
            await wait_for(lambda: poller.state.last_error is not None, 10, "the refusal")
            await asyncio.sleep(1.5)
            assert "HTTP 401" in poller.state.last_error
            assert poller.check()[0] is False
        # refused requests are not retried in a loop: one, then a cool-down
        assert api.ledger.statuses[401] <= 2
