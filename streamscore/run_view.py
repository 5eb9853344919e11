"""Rendering of ``streamscore run``: a rich table for a terminal, one plain line for CI logs."""

from __future__ import annotations

import time

from rich.console import Group
from rich.table import Table
from rich.text import Text

from streamscore.pipeline_probe import STAGES, Snapshot
from streamscore.supervisor import Supervisor


def _n(value: float | int | None) -> str:
    return "-" if value is None else f"{int(value):,}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _ready(value: bool | None) -> str:
    return {True: "[green]ready[/]", False: "[red]not ready[/]", None: "[dim]-[/]"}[value]


def table(snap: Snapshot, sup: Supervisor, elapsed_s: float, target: str) -> Group:
    """The live view: stages, lag, DLQ, children."""
    stages = Table(title=f"streamscore run — {elapsed_s:,.0f}s{target}", title_justify="left")
    stages.add_column("stage")
    stages.add_column("records", justify="right")
    stages.add_column("per second", justify="right")
    stages.add_column("", justify="left")
    extra = {
        "stored": f"{_n(snap.documents)} documents in MongoDB; "
        f"fetch→ack p50 {_ms(snap.e2e_p50_s)}, p99 {_ms(snap.e2e_p99_s)}",
    }
    for stage in STAGES:
        stages.add_row(stage, _n(snap.counts[stage]), f"{snap.rates[stage]:,.0f}", extra.get(stage, ""))
    dlq = ", ".join(f"{k} {_n(v)}" for k, v in sorted(snap.dlq.items())) or "none"
    lag = ", ".join(f"{g} {_n(v)}" for g, v in sorted(snap.lag.items())) or "-"
    info = Text.from_markup(f"[bold]lag[/] (messages): {lag}\n[bold]dead letters[/]: {dlq}")
    children = Table(show_edge=False, box=None, padding=(0, 2))
    for column in ("process", "pid", "state", "restarts", "health"):
        children.add_column(column)
    now = time.monotonic()
    components = {"poll": "poller", "process": "processor", "sink": "sink"}
    for child in sup.children:
        pid = str(child.proc.pid) if child.running and child.proc else "-"
        health = _ready(snap.ready.get(components[child.name])) if child.name in components else ""
        children.add_row(child.name, pid, child.state(now), str(child.restarts), health)
    return Group(stages, info, children)


def line(snap: Snapshot, sup: Supervisor, elapsed_s: float) -> str:
    """One progress line for logs (stdout not a terminal)."""
    now = time.monotonic()
    parts = [f"t={elapsed_s:.0f}s"]
    parts += [f"{s}={_n(snap.counts[s])} ({snap.rates[s]:,.0f}/s)" for s in STAGES]
    parts.append(f"docs={_n(snap.documents)}")
    parts.append("lag=" + ",".join(f"{g}:{_n(v)}" for g, v in sorted(snap.lag.items())))
    parts.append("dlq=" + (",".join(f"{k}:{_n(v)}" for k, v in sorted(snap.dlq.items())) or "0"))
    parts.append("p99=" + _ms(snap.e2e_p99_s).replace(" ", ""))
    down = [f"{c.name}:{c.state(now)}" for c in sup.children if not c.running]
    parts.append("children=" + (";".join(down) if down else "all-up"))
    return " ".join(parts)
