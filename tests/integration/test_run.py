"""``streamscore run --records 5000`` on the real stack: the demo API's ledger ends in MongoDB.

The demo API (5000 clean records, with injected faults: 429s, 503s, overlapping pages, and bad
records — non-objects and records without an id) runs as the run's external source, so its
ledger outlives the run; the run starts the poller, the processor and the sink as child
processes (no demo API of its own: the source is not the bundled one) and exits 0 once 5000
documents are stored. Then MongoDB holds exactly one prediction per id the API served, and
``dlq.<source>`` exactly the injected bad records (stage ``extract``; one the API slips into an
empty page after the data is the poller's call, see :func:`injected_bad_records`). Everything is
isolated: unique source, groups, database and ports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from producers.demo_api.store import decode_cursor
from streamscore.settings import REPO_ROOT, load_settings
from tests.conftest import unique
from tests.integration.sink_support import collection, dead_letters, free_port

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("stack"), pytest.mark.timeout(900)]
N = 5000


def base_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")}
    return env | {
        "STREAMSCORE_REGISTRY__CACHE_DIR": str(tmp_path / "schema-cache"),
        "STREAMSCORE_LOG_FORMAT": "json",
        "STREAMSCORE_ENVIRONMENT": "test",
    }


def api_env(tmp_path: Path, api_port: int) -> dict[str, str]:
    faults = {
        "throttle": {"every": 9, "after": 1},
        "error": {"every": 11, "after": 3},
        "overlap": {"every": 6, "after": 4},
        "non_object": {"every": 5, "after": 0},
        "missing_id": {"every": 7, "after": 2},
        "retry_after_s": 0,
    }
    return base_env(tmp_path) | {
        "STREAMSCORE_DEMO_API__PORT": str(api_port),
        "STREAMSCORE_DEMO_API__BACKLOG": str(N),
        "STREAMSCORE_DEMO_API__MAX_RECORDS": str(N),
        "STREAMSCORE_DEMO_API__DIRTY": "0",
        "STREAMSCORE_DEMO_API__FAULTS": json.dumps(faults),
    }


def run_env(tmp_path: Path, source: str, database: str, api_port: int) -> dict[str, str]:
    src = {
        "name": source,
        "url": f"http://127.0.0.1:{api_port}/transactions",
        "page_size": 250,
        "rate_limit_per_s": 200.0,
        "poll_interval_s": 60.0,
        "backoff_initial_s": 0.05,
        "backoff_cap_s": 0.5,
    }
    return base_env(tmp_path) | {
        "STREAMSCORE_SOURCES": json.dumps([src]),
        "STREAMSCORE_PROCESSOR__APP_ID": f"streamscore-processor-{source}",
        "STREAMSCORE_SINK__APP_ID": f"streamscore-sink-{source}",
        "STREAMSCORE_SINK__DATADIR": str(tmp_path / "faust"),
        "STREAMSCORE_MONGO__DATABASE": database,
        "STREAMSCORE_HEALTH__POLLER_PORT": str(free_port()),
        "STREAMSCORE_HEALTH__PROCESSOR_PORT": str(free_port()),
        "STREAMSCORE_HEALTH__SINK_PORT": str(free_port()),
    }


@pytest.fixture
def demo_api(tmp_path):
    """The demo API as the run's external source, so its ledger outlives the run."""
    port = free_port()
    log = (tmp_path / "demo-api.log").open("wb")
    cmd = [sys.executable, "-m", "streamscore.cli", "demo-api"]
    api = subprocess.Popen(cmd, cwd=REPO_ROOT, env=api_env(tmp_path, port), stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while ledger(port) is None:
        assert api.poll() is None and time.monotonic() < deadline, (tmp_path / "demo-api.log").read_text()
        time.sleep(0.3)
    yield port
    api.terminate()
    api.wait(20)
    log.close()


def injected_bad_records(port: int) -> tuple[int, int]:
    """Bad records the API put into pages that carried records, and into empty (idle) pages.

    A bad record in an empty page after the data is the poller's call (its no-progress guard may
    drop the page), so the test allows those either way; with ``poll_interval_s`` 60 there is at
    most one idle request (and its retries) before the run ends.
    """
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_requests", timeout=10) as resp:
        requests = json.loads(resp.read())
    in_data = idle = 0
    for r in requests:
        if r["status"] != 200 or r["fault"] not in ("non_object", "missing_id"):
            continue
        token = r["query"].get("cursor")
        position = decode_cursor(token) if token else 0
        if position < N:
            in_data += 1
        else:
            idle += 1
    return in_data, idle


def ledger(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_ledger?ids=1", timeout=10) as resp:
            return dict(json.loads(resp.read()))
    except OSError:
        return None


def test_run_stores_one_prediction_per_served_id_and_dead_letters_exactly_the_bad_records(tmp_path, demo_api):
    source, database = unique("run"), unique("rundb_")
    env = run_env(tmp_path, source, database, demo_api)
    cmd = [sys.executable, "-m", "streamscore.cli", "run", "--records", str(N), "--duration", "600"]
    run = subprocess.run(
        [*cmd, "--every", "5", "--logs", str(tmp_path / "logs")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=800,
    )
    out = run.stdout + run.stderr
    files = sorted((tmp_path / "logs").glob("*.log"))
    logs = "".join(f"\n--- {p.name} ---\n{p.read_text()[-2500:]}" for p in files)
    assert run.returncode == 0, out[-6000:] + logs
    assert f"records stored (--records {N:,})" in out, out[-6000:]
    assert "started sink, process, poll;" in out, "a source that is not the bundled demo API: no demo-api"
    assert "t=" in out and "fetched=" in out, "plain progress lines when stdout is not a terminal"

    served_ledger = ledger(demo_api)  # final: the run stopped the poller first
    assert served_ledger is not None
    served = set(served_ledger["ids"])
    assert len(served) == served_ledger["count"] == N
    coll = collection(database)
    try:
        docs = list(coll.find({}, {"record_id": 1, "model": 1, "source": 1}))
        by_id: dict[str, int] = {}
        for d in docs:
            by_id[d["record_id"]] = by_id.get(d["record_id"], 0) + 1
        assert set(by_id) == served, (len(set(by_id) - served), len(served - set(by_id)))
        assert max(by_id.values()) == 1 and len(docs) == N  # one prediction per served id
        assert {d["source"] for d in docs} == {source}

        in_data, idle = injected_bad_records(demo_api)
        assert in_data > 0 and in_data + idle == sum(served_ledger["bad_records"].values())
        settings = load_settings(sources=[{"name": source}], registry={"cache_dir": str(tmp_path / "c")})
        letters = dead_letters(settings, expected=in_data, timeout_s=30)
        why = [(x.get("stage"), x.get("exception.message")) for x in letters]
        assert in_data <= len(letters) <= in_data + idle, (in_data, idle, why)
        assert {x["stage"] for x in letters} == {"extract"}
        assert all(x["value"] == b'"not an object"' or b'"id"' not in x["value"] for x in letters), why
        assert not {(x["key"] or b"").decode() for x in letters} & served
    finally:
        coll.database.client.drop_database(database)
