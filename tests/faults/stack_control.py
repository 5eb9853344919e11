"""Stop and start the local stack's services (Kafka, registry, MongoDB-wire server) from a test.

Every fault test that takes a service down goes through this module, which drives
``deploy/local/stack.sh`` with the environment the tests run in: ``STREAMSCORE_STACK_DIR`` and the
``STACK_*_PORT`` knobs. So the same test works against the default stack (CI: ``.stack``, ports
9092/8081/27017) and against a second stack beside a shared one (development: e.g.
``STREAMSCORE_STACK_DIR=.stack-faults STACK_KAFKA_PORT=19092 ...``; see docs/reliability.md).

Two guards keep a test from stopping a stack that other people use:

- the stack the script controls must be the one the settings point at (same ports), else
  :class:`StackMismatch`;
- the default stack (``<repo>/.stack``) is only taken down under ``CI=true`` or with
  ``STREAMSCORE_FAULTS_CONTROL_STACK=1``; otherwise :func:`require_control` skips the test and
  says how to run it (on a shared development machine the default stack belongs to everyone).

``python -m tests.faults.stack_control env`` prints the exports for a second stack.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from streamscore.settings import REPO_ROOT, load_settings

STACK_SH = REPO_ROOT / "deploy" / "local" / "stack.sh"
SERVICES = ("kafka", "registry", "mongo")
DEFAULT_PORTS = {"kafka": 9092, "registry": 8081, "mongo": 27017}
PORT_ENV = {"kafka": "STACK_KAFKA_PORT", "registry": "STACK_REGISTRY_PORT", "mongo": "STACK_MONGO_PORT"}
#: the second stack of docs/reliability.md (ports chosen clear of the default stack's)
DEV_STACK = {
    "STREAMSCORE_STACK_DIR": str(REPO_ROOT / ".stack-faults"),
    "STACK_KAFKA_PORT": "19092",
    "STACK_KAFKA_CONTROLLER_PORT": "19093",
    "STACK_REGISTRY_PORT": "18081",
    "STACK_REGISTRY_MANAGEMENT_PORT": "18091",
    "STACK_MONGO_PORT": "27117",
    "STACK_MONGO_DEBUG_PORT": "18088",
}


class StackMismatch(RuntimeError):
    """The stack script would act on another stack than the one the tests use."""


def stack_dir() -> Path:
    return Path(os.environ.get("STREAMSCORE_STACK_DIR") or REPO_ROOT / ".stack").resolve()


def is_default_stack() -> bool:
    return stack_dir() == (REPO_ROOT / ".stack").resolve()


def script_ports() -> dict[str, int]:
    """The port of each service as stack.sh sees it (its environment knobs)."""
    return {s: int(os.environ.get(PORT_ENV[s]) or DEFAULT_PORTS[s]) for s in SERVICES}


def settings_ports() -> dict[str, int]:
    """The port of each service as the settings (STREAMSCORE_* environment) name it."""
    s = load_settings()
    kafka = s.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)[1]
    registry = urlsplit(s.registry.url).port or 80
    mongo = urlsplit(s.mongo.url.get_secret_value().split(",")[0]).port or 27017
    return {"kafka": int(kafka), "registry": registry, "mongo": mongo}


def check_consistent() -> None:
    script, used = script_ports(), settings_ports()
    if script != used:
        raise StackMismatch(
            f"stack.sh controls ports {script} but the settings use {used}: set STACK_*_PORT "
            "(and STREAMSCORE_STACK_DIR) to the stack the STREAMSCORE_* addresses point at"
        )


def control_allowed() -> tuple[bool, str]:
    """Whether this run may stop services, and why not."""
    if not is_default_stack():
        return True, ""
    if os.environ.get("CI") == "true" or os.environ.get("STREAMSCORE_FAULTS_CONTROL_STACK") == "1":
        return True, ""
    return False, (
        "would stop services of the default local stack (.stack), which may be shared: runs under "
        "CI=true, or with STREAMSCORE_FAULTS_CONTROL_STACK=1, or against a second stack "
        "(python -m tests.faults.stack_control env; docs/reliability.md)"
    )


def require_control() -> None:
    """Skip the calling test when it may not take stack services down (see module docstring)."""
    import pytest

    allowed, why = control_allowed()
    if not allowed:
        pytest.skip(why)
    check_consistent()


def _script(*args: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [str(STACK_SH), *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"stack.sh {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return out


def pid(service: str) -> int | None:
    """Pid of the service as stack.sh recorded it, if that process is alive."""
    path = stack_dir() / "pids" / f"{service}.pid"
    try:
        value = int(path.read_text().strip())
        os.kill(value, 0)
    except (OSError, ValueError):
        return None
    return value


def port_open(service: str) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", script_ports()[service]), timeout=1):
            return True
    except OSError:
        return False


def stop(service: str, kill9: bool = False) -> float:
    """Take ``service`` down: stack.sh's clean stop (TERM, wait), or SIGKILL. Returns seconds taken."""
    assert service in SERVICES, service
    check_consistent()
    started = time.monotonic()
    if kill9:
        victim = pid(service)
        if victim is None:
            raise RuntimeError(f"{service}: no live pid file under {stack_dir()} (not started by stack.sh?)")
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        # a JVM's threads outlive its (zombie) main thread for a moment, sockets included
        while (_alive(victim) or port_open(service)) and time.monotonic() < deadline:
            time.sleep(0.05)
    else:
        if pid(service) is None:
            raise RuntimeError(f"{service}: no live pid file under {stack_dir()} (not started by stack.sh?)")
        _script("down", service)
    if port_open(service):
        raise RuntimeError(f"{service}: port {script_ports()[service]} still open after stopping it")
    return time.monotonic() - started


def start(service: str) -> float:
    """Start ``service`` and wait until it answers (stack.sh up). Returns seconds taken."""
    assert service in SERVICES, service
    check_consistent()
    started = time.monotonic()
    _script("up", service)
    return time.monotonic() - started


def ensure_up() -> None:
    """Start whatever service is down (a fault test's teardown), so later tests find the stack."""
    down = [s for s in SERVICES if not port_open(s)]
    if down:
        _script("up", *down)


def _alive(p: int) -> bool:
    try:
        os.kill(p, 0)
    except OSError:
        return False
    try:  # a zombie of a process we did not spawn is reaped by its parent; count it as gone
        state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _print_env() -> None:
    env = DEV_STACK
    for key, value in env.items():
        print(f"export {key}={value}")
    print(f"export STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:{env['STACK_KAFKA_PORT']}")
    print(f"export STREAMSCORE_REGISTRY__URL=http://127.0.0.1:{env['STACK_REGISTRY_PORT']}/apis/ccompat/v7")
    print(f"export STREAMSCORE_MONGO__URL=mongodb://127.0.0.1:{env['STACK_MONGO_PORT']}")


if __name__ == "__main__":
    if sys.argv[1:] == ["env"]:
        _print_env()
    else:
        print("usage: python -m tests.faults.stack_control env", file=sys.stderr)
        sys.exit(2)
