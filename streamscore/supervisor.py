"""Child processes of ``streamscore run``: start, watch, restart with backoff, stop.

Each child is ``python -m streamscore.supervisor <command>`` — the ``streamscore <command>`` CLI,
after asking Linux to send it SIGTERM if the supervisor dies (``PR_SET_PDEATHSIG``), so no orphan
keeps consuming — in its own process group (a Ctrl-C reaches only the supervisor, which then
stops the children), with output appended to ``<log_dir>/<command>.log``. A crashed child is restarted after
``1, 2, 4, … 30 s`` (reset after a minute of uptime); exit code 2 (a configuration error) is not
retried. Stopping goes child by child, last started first: SIGTERM, then SIGKILL after a grace
period.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_ERROR_EXIT = 2
STABLE_AFTER_S = 60.0
BACKOFF_CAP_S = 30.0
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Linux: get SIGTERM when the parent process dies (best effort elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def log_tail(path: Path, lines: int = 8) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(line for line in text.splitlines()[-lines:] if line.strip())


@dataclass
class Child:
    """One supervised command."""

    name: str
    argv: list[str]
    log_path: Path
    proc: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    failures: int = 0
    restart_at: float | None = None
    last_exit: str = ""
    gave_up: bool = False
    history: list[str] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def state(self, now: float) -> str:
        if self.running:
            return "up"
        if self.gave_up:
            return f"stopped ({self.last_exit})"
        if self.restart_at is not None:
            return f"restart in {max(0.0, self.restart_at - now):.0f}s"
        return "down"


class Supervisor:
    """Starts the children, restarts the ones that crash, stops them all."""

    def __init__(
        self,
        commands: list[str],
        log_dir: Path,
        notify: Callable[[str], None],
        argv: Callable[[str], list[str]] | None = None,
    ) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        argv = argv or (lambda cmd: [sys.executable, "-m", "streamscore.supervisor", cmd])
        self.children = [Child(cmd, argv(cmd), log_dir / f"{cmd}.log") for cmd in commands]
        self.notify = notify
        self.stopping = False

    async def _spawn(self, child: Child) -> None:
        with child.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            log.write(f"\n=== {stamp} streamscore run: starting {child.name} ===\n".encode())
            log.flush()
            child.proc = await asyncio.create_subprocess_exec(
                *child.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                process_group=0,
            )
        child.started_at = time.monotonic()
        child.restart_at = None

    async def start(self) -> None:
        for child in self.children:
            await self._spawn(child)

    async def watch(self) -> None:
        """Notice exits and restart what is due; call every tick."""
        now = time.monotonic()
        for child in self.children:
            if self.stopping or child.gave_up:
                continue
            if child.proc is not None and child.proc.returncode is not None and child.restart_at is None:
                self._crashed(child, child.proc.returncode, now)
            if child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                await self._spawn(child)
                self.notify(f"{child.name}: restarted (restart {child.restarts})")

    def _crashed(self, child: Child, code: int, now: float) -> None:
        child.last_exit = describe_exit(code)
        tail = log_tail(child.log_path)
        if code == CONFIG_ERROR_EXIT:
            child.gave_up = True
            self.notify(f"{child.name}: {child.last_exit} (configuration error), not restarting\n{tail}")
            return
        child.failures = 1 if now - child.started_at >= STABLE_AFTER_S else child.failures + 1
        delay = min(BACKOFF_CAP_S, 2.0 ** (child.failures - 1))
        child.restart_at = now + delay
        child.history.append(child.last_exit)
        self.notify(f"{child.name}: {child.last_exit}; restarting in {delay:.0f}s. Last log lines:\n{tail}")

    @property
    def config_error(self) -> bool:
        return any(c.gave_up for c in self.children)

    async def stop(self, grace_s: float) -> dict[str, str]:
        """Stop the children one by one, the last started first (the poller before the consumers,
        the demo API last): SIGTERM, then SIGKILL after ``grace_s``. Returns how each ended."""
        self.stopping = True
        outcome: dict[str, str] = {}
        for child in reversed(self.children):
            if not child.running:
                continue
            assert child.proc is not None
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
            try:
                code = await asyncio.wait_for(child.proc.wait(), grace_s)
                outcome[child.name] = describe_exit(code)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
                await child.proc.wait()
                outcome[child.name] = f"killed after {grace_s:g}s grace"
        return outcome


if __name__ == "__main__":  # a child: ``python -m streamscore.supervisor <command> [args]``
    die_with_parent()
    from streamscore.cli import run

    sys.argv = ["streamscore", *sys.argv[1:]]
    run()
