"""docker-compose.yml is valid for `docker compose` and runs the documented topology.

No Docker engine runs here; `docker compose config` validates and normalises the file without one
(the plugin is built by deploy/local/compose-plugin.sh, called by `make test`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _config() -> dict:
    assert shutil.which("docker"), "docker client missing"
    out = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_compose_file_is_valid_and_has_every_service():
    services = _config()["services"]
    expected = {"kafka", "registry", "mongodb", "prometheus", "grafana"}
    apps = {"demo-api", "poller", "processor", "sink", "exporter"}
    assert expected | apps <= set(services)
    for name in apps:
        assert services[name]["image"] == "streamscore:local"
        env = services[name]["environment"]
        assert env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_grafana_and_prometheus_mount_the_repo_config():
    services = _config()["services"]
    sources = {v["source"] for v in services["grafana"]["volumes"]}
    assert str(ROOT / "deploy/grafana/provisioning") in sources
    prom = {v["source"] for v in services["prometheus"]["volumes"]}
    assert str(ROOT / "deploy/prometheus") in prom
