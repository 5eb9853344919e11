"""Issue 3: a source's requests never exceed its configured rate, retries included."""

from __future__ import annotations

import pytest

from tests.integration.poller_support import demo, poll_to_end, raw_ids

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("stack")]

SLACK_S = 0.015  # scheduling and loopback jitter between the client's clock and the server's


@pytest.mark.parametrize("burst", [1, 3])
async def test_requests_never_exceed_the_configured_rate(make_settings, burst):
    rate = 25.0
    faults = {"error": {"every": 4, "after": 1}}  # retries must queue behind the same limiter
    api, settings, name, _ = await poll_to_end(
        make_settings,
        demo(900, faults=faults),
        page_size=30,
        rate_limit_per_s=rate,
        rate_limit_burst=burst,
        backoff_initial_s=0.001,
        backoff_cap_s=0.002,
    )
    assert set(raw_ids(settings, name)) == set(api.ledger.ids())
    times = sorted(r["t"] for r in api.ledger.requests)
    assert len(times) >= 35
    # in any window [t_i, t_j] at most burst + rate * (t_j - t_i) requests arrive
    for i in range(len(times)):
        for j in range(i + 1, len(times)):
            allowed = burst + rate * (times[j] - times[i] + SLACK_S)
            assert j - i + 1 <= allowed, f"{j - i + 1} requests in {times[j] - times[i]:.3f}s"
    # and the limiter was what paced the poller (it would go much faster otherwise)
    assert times[-1] - times[0] >= (len(times) - burst) / rate - 0.1
