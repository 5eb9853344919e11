"""Run ``streamscore process`` or ``streamscore sink`` with fault hooks: a slow or a stalled batch.

Test-only: production code carries no hook. ``python -m tests.faults.hooked process|sink`` installs
the hooks named by ``STREAMSCORE_FAULT_HOOKS`` (JSON list) and then runs the normal command. A hook
fires on the first batch that matches it, *inside* the stage's own batch handling (after the
batch was taken from the stream and before its outputs are produced or written), so the batch is
genuinely in flight while the hook holds it:

- processor: wraps the ``handle`` that ``Processor.run_batch`` calls for agent ``agent``
  (the agent's name, e.g. ``clean-<source>``);
- sink: wraps ``Sink._prepare`` (``agent`` = ``sink``), which runs once the batch is in flight.

Hook fields: ``agent``; ``action`` = ``sleep`` (``seconds``) or ``stall`` (await forever);
``partition`` / ``min_offset`` (fire only on a batch holding such a message); ``once_file``: fire
only if this file does not exist yet, and create it (once across restarts). Each firing appends
a JSON line to ``STREAMSCORE_FAULT_HOOK_LOG`` with the batch's partitions, offsets and keys.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HOOKS_ENV = "STREAMSCORE_FAULT_HOOKS"
LOG_ENV = "STREAMSCORE_FAULT_HOOK_LOG"


def _hooks() -> list[dict[str, Any]]:
    return list(json.loads(os.environ.get(HOOKS_ENV) or "[]"))


def _messages(batch: Sequence[Any]) -> list[tuple[int, int, bytes | None]]:
    """(partition, offset, key) of a processor batch (Incoming) or a sink batch (Faust messages)."""
    out = []
    for item in batch:
        msg = getattr(item, "message", item)
        key = msg.key if isinstance(msg.key, bytes | type(None)) else str(msg.key).encode()
        out.append((int(msg.partition), int(msg.offset), key))
    return out


def _matches(hook: dict[str, Any], agent: str, batch: Sequence[Any]) -> bool:
    if hook["agent"] != agent:
        return False
    msgs = _messages(batch)
    if hook.get("partition") is not None:
        msgs = [m for m in msgs if m[0] == hook["partition"]]
    if hook.get("min_offset") is not None:
        msgs = [m for m in msgs if m[1] >= hook["min_offset"]]
    if not msgs:
        return False
    once = hook.get("once_file")
    if once:
        try:
            with open(once, "x") as fh:  # atomic: only the first match anywhere fires
                fh.write(str(os.getpid()))
        except FileExistsError:
            return False
    return True


def _report(hook: dict[str, Any], agent: str, batch: Sequence[Any], event: str) -> None:
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    msgs = _messages(batch)
    line = {
        "event": event,
        "agent": agent,
        "action": hook["action"],
        "pid": os.getpid(),
        "t": time.time(),
        "messages": [[p, o, k.decode("utf-8", "replace") if k else None] for p, o, k in msgs],
    }
    with Path(path).open("a") as fh:
        fh.write(json.dumps(line) + "\n")


async def _fire(agent: str, batch: Sequence[Any]) -> None:
    for hook in _hooks():
        if _matches(hook, agent, batch):
            _report(hook, agent, batch, "fired")
            if hook["action"] == "stall":
                await asyncio.Event().wait()
            await asyncio.sleep(float(hook.get("seconds", 10)))
            _report(hook, agent, batch, "released")


def install() -> None:
    from streams import processor, sink

    run_batch = processor.Processor.run_batch

    async def hooked_run_batch(self: Any, name: str, events: Any, handle: Any) -> Any:
        async def hooked_handle(batch: Any, emit: Any) -> Any:
            await _fire(name, batch)
            return await handle(batch, emit)

        return await run_batch(self, name, events, hooked_handle)

    processor.Processor.run_batch = hooked_run_batch  # type: ignore[method-assign]

    prepare = sink.Sink._prepare

    async def hooked_prepare(self: Any, events: Any) -> Any:
        await _fire("sink", events)
        return await prepare(self, events)

    sink.Sink._prepare = hooked_prepare  # type: ignore[method-assign]


def main() -> None:
    install()
    from streamscore.cli import run

    run()


if __name__ == "__main__":
    sys.argv[0] = "streamscore"
    main()
