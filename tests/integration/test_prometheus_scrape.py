"""A real Prometheus (Debian's `prometheus` binary) scrapes every process of a short
`streamscore run --duration ...` (poller, processor, sink) and the lag exporter beside it; the
consumer-lag metric of the pipeline groups returns samples, every target is up, and the alert
rules load in the server.

The processes run on free ports with a unique source, groups and database, so the shared stack's
other users are not disturbed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import unique
from tests.integration.sink_support import free_port

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("stack"), pytest.mark.timeout(240)]
ROOT = Path(__file__).resolve().parents[2]
STREAMSCORE = str(Path(sys.executable).with_name("streamscore"))
COMPONENTS = ("poller", "processor", "sink", "exporter")


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        message = "prometheus not installed (Debian package `prometheus`; deploy/local/stack.sh fetch)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def prometheus_config(ports: dict[str, int], rules_dir: Path) -> str:
    targets = "\n".join(
        f'      - targets: ["127.0.0.1:{port}"]\n        labels: {{component: {name}}}'
        for name, port in ports.items()
    )
    return f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {rules_dir}/*.yml
scrape_configs:
  - job_name: streamscore
    honor_labels: true
    static_configs:
{targets}
"""


class Processes:
    """Child processes with their logs, stopped (SIGTERM, then kill) at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    def tail(self) -> str:
        return "\n".join(
            f"--- {p.name} ---\n{p.read_text(errors='replace')[-1500:]}" for p in self.logs.glob("*.log")
        )

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.stop()


def query(base: str, promql: str) -> list[dict[str, Any]]:
    resp = httpx.get(f"{base}/api/v1/query", params={"query": promql}, timeout=5)
    resp.raise_for_status()
    return list(resp.json()["data"]["result"])


def test_prometheus_scrapes_every_process_and_the_lag_metric(processes: Processes, tmp_path: Path) -> None:
    binary = prometheus_binary()
    source = unique("scrape")
    ports = {name: free_port() for name in COMPONENTS}
    api_port, prom_port = free_port(), free_port()
    sink_group = f"streamscore-sink-{source}"
    env = os.environ | {
        "STREAMSCORE_SOURCES": json.dumps(
            [{"name": source, "url": f"http://127.0.0.1:{api_port}/transactions"}]
        ),
        "STREAMSCORE_DEMO_API__PORT": str(api_port),
        "STREAMSCORE_HEALTH__POLLER_PORT": str(ports["poller"]),
        "STREAMSCORE_HEALTH__PROCESSOR_PORT": str(ports["processor"]),
        "STREAMSCORE_HEALTH__SINK_PORT": str(ports["sink"]),
        "STREAMSCORE_HEALTH__EXPORTER_PORT": str(ports["exporter"]),
        "STREAMSCORE_PROCESSOR__APP_ID": f"streamscore-processor-{source}",
        "STREAMSCORE_SINK__APP_ID": sink_group,
        "STREAMSCORE_SINK__DATADIR": str(tmp_path / "faust"),
        "STREAMSCORE_MONGO__DATABASE": unique("scrapedb_"),
        "STREAMSCORE_REGISTRY__CACHE_DIR": str(tmp_path / "schema-cache"),
        "STREAMSCORE_LOG_FORMAT": "json",
    }
    env |= {"STREAMSCORE_DEMO_API__BACKLOG": "300", "STREAMSCORE_DEMO_API__RATE_PER_S": "20"}
    run = [STREAMSCORE, "run", "--duration", "150", "--plain", "--every", "2"]
    processes.start("run", run, env)  # demo API, poller, processor, sink as its children
    processes.start("exporter", [STREAMSCORE, "exporter", "--interval", "1"], env)

    config = tmp_path / "prometheus.yml"
    config.write_text(prometheus_config(ports, ROOT / "deploy" / "prometheus" / "rules"))
    processes.start(
        "prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        env,
    )
    base = f"http://127.0.0.1:{prom_port}"

    lag: list[dict[str, Any]] = []
    up: dict[str, str] = {}
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        for name, proc in processes.procs.items():
            assert proc.poll() is None, f"{name} exited {proc.returncode}\n{processes.tail()}"
        try:
            up = {s["metric"]["component"]: s["value"][1] for s in query(base, 'up{job="streamscore"}')}
            lag = query(base, f'streamscore_consumer_lag_messages{{group="{sink_group}"}}')
            written = query(base, "streamscore_sink_documents_written_total")
        except httpx.HTTPError:  # not listening yet, or 503 while its storage starts
            time.sleep(1)
            continue
        if lag and up == dict.fromkeys(COMPONENTS, "1") and written:
            break
        time.sleep(1)
    assert up == dict.fromkeys(COMPONENTS, "1"), f"targets: {up}\n{processes.tail()}"
    assert lag, f"no lag samples for {sink_group}\n{processes.tail()}"
    assert {s["metric"]["topic"] for s in lag} == {f"predictions.{source}"}
    assert all(float(s["value"][1]) >= 0 for s in lag)
    assert query(base, f'streamscore_consumer_lag_seconds{{group="{sink_group}"}}')
    assert written, "the sink stored nothing during the run"

    run_proc = processes.procs["run"]
    run_proc.terminate()  # a clean stop of the whole run (it would stop by itself at --duration)
    assert run_proc.wait(60) == 0, processes.tail()

    rules = httpx.get(f"{base}/api/v1/rules", timeout=5).json()["data"]["groups"]
    loaded = {r["name"] for g in rules for r in g["rules"]}
    assert {"StreamscoreConsumerStalled", "StreamscoreProcessDown", "StreamscoreConsumerLagHigh"} <= loaded
    assert all(r.get("health") == "ok" for g in rules for r in g["rules"]), rules
