"""Issue 3: kill -9 of the poller mid-run, restart: it resumes from the stored cursor, no id is
missing, and (page and cursor share one transaction) no id is duplicated for a read_committed reader."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import aiohttp
import pytest

from producers.cursor_store import load_cursors
from producers.demo_api.server import serving
from producers.demo_api.store import decode_cursor, encode_cursor
from tests.conftest import unique
from tests.integration.poller_support import demo, free_port, raw_ids, source, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("stack")]


def start_poller(src: dict, tmp_path, port: int | None = None) -> subprocess.Popen:
    env = os.environ | {
        "STREAMSCORE_SOURCES": json.dumps([src]),
        "STREAMSCORE_HEALTH__POLLER_PORT": str(port or free_port()),
        "STREAMSCORE_REGISTRY__CACHE_DIR": str(tmp_path / "schemas"),
        "STREAMSCORE_LOG_LEVEL": "WARNING",
    }
    env.pop("STREAMSCORE_CONFIG", None)
    log = open(tmp_path / "poller.log", "ab")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        [sys.executable, "-m", "streamscore.cli", "poll"], env=env, stdout=log, stderr=log
    )


async def test_kill_9_mid_run_then_restart_loses_and_duplicates_nothing(make_settings, tmp_path):
    total = 3000
    async with serving(demo(total)) as (api, url):
        name = unique("kill")
        src = source(name, url, page_size=50, rate_limit_per_s=40.0)
        settings = make_settings(sources=[src])
        first = start_poller(src, tmp_path)
        try:
            # generous deadlines: start-up is seconds on a quiet machine, much more on a busy one
            await wait_for(lambda: api.ledger.summary()["count"] >= 900, 45, "the first poller to get going")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        served_before = api.ledger.summary()["count"]
        requests_before = len(api.ledger.requests)
        assert served_before < total, "killed too late: the run was over"
        stored = (await asyncio.to_thread(load_cursors, settings))[name]
        assert stored.position is not None and 0 < decode_cursor(stored.position) <= served_before

        health = free_port()
        second = start_poller(src, tmp_path, health)
        try:
            end = encode_cursor(total)

            def finished() -> bool:
                return api.ledger.summary()["count"] == total and any(
                    r["query"].get("cursor") == end for r in api.ledger.requests
                )

            await wait_for(finished, 45, "the second poller to catch up")
            for _ in range(50):  # read the cursor topic off the event loop: the API runs on it
                if (await asyncio.to_thread(load_cursors, settings))[name].position == end:
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the final cursor was not committed")
            async with aiohttp.ClientSession() as http:
                base = f"http://127.0.0.1:{health}"
                async with http.get(f"{base}/healthz") as resp:
                    assert resp.status == 200
                async with http.get(f"{base}/readyz") as resp:
                    ready = await resp.json()
                    assert resp.status == 200, ready
                    assert ready["checks"][f"source:{name}"]["ok"] is True
                async with http.get(f"{base}/metrics") as resp:
                    text = await resp.text()
                produced = f'streamscore_poller_records_produced_total{{source="{name}"}}'
                assert any(line.startswith(produced) for line in text.splitlines())
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(15) == 0, (tmp_path / "poller.log").read_text()[-3000:]

    resumed = list(api.ledger.requests)[requests_before]
    assert "cursor" in resumed["query"], "the restarted poller began from scratch"
    assert decode_cursor(resumed["query"]["cursor"]) == decode_cursor(stored.position)
    ids = raw_ids(settings, name)
    assert set(ids) == set(api.ledger.ids())
    assert len(ids) == len(set(ids)) == total
