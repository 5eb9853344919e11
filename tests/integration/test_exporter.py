"""`streamscore exporter` as a process: lag gauges of a group with a known backlog on /metrics,
/readyz 200 once a measurement succeeded, /healthz alive."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamscore.topics import DAY_MS, TopicSpec, ensure_topics
from tests.conftest import unique
from tests.integration.test_lag import commit, produce

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("stack")]
STREAMSCORE = str(Path(sys.executable).with_name("streamscore"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lag_samples(text: str, group: str) -> dict[tuple[str, str], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("group") == group:
                out[(s.name, s.labels["partition"])] = s.value
    return out


def test_exporter_serves_lag_of_a_group(make_settings: Any) -> None:
    settings = make_settings()
    topic, group = unique("lagexport-"), unique("laggroup-")
    ensure_topics(settings, [TopicSpec(topic, 2, DAY_MS)])
    produce(settings, topic, {0: 6, 1: 3}, int((time.time() - 120) * 1000))
    commit(settings, group, {(topic, 0): 1, (topic, 1): 3})
    port = free_port()
    env = os.environ | {"STREAMSCORE_HEALTH__EXPORTER_PORT": str(port), "STREAMSCORE_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(
        [STREAMSCORE, "exporter", "--group", group, "--interval", "1", "--duration", "30"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        samples: dict[tuple[str, str], float] = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(samples) < 4:
            with contextlib.suppress(httpx.TransportError):
                samples = lag_samples(httpx.get(f"{base}/metrics", timeout=2).text, group)
            time.sleep(0.3)
        assert samples.get(("streamscore_consumer_lag_messages", "0")) == 5
        assert samples.get(("streamscore_consumer_lag_messages", "1")) == 0
        assert 115 < samples[("streamscore_consumer_lag_seconds", "0")] < 180
        assert samples[("streamscore_consumer_lag_seconds", "1")] == 0
        ready = httpx.get(f"{base}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["checks"]["lag_measured"]["ok"]
        assert httpx.get(f"{base}/healthz", timeout=5).json()["status"] == "alive"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
