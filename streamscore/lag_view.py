"""``streamscore lag`` output: a rich table (optionally live) or JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.live import Live
from rich.table import Table

from streamscore.lag import PartitionLag, report

STATUS_STYLE = {"ok": "", "no-commit": "yellow", "expired": "bold red", "reset": "bold red"}


def _fmt_offset(value: int | None) -> str:
    return "-" if value is None else str(value)


def _fmt_seconds(row: PartitionLag) -> str:
    if row.lag_seconds is None:
        return "?"
    return f"{row.lag_seconds:,.1f}"


def make_console() -> Console:
    """A terminal-sized console, or a wide one when piped (tables stay one line per row)."""
    probe = Console()
    return probe if probe.is_terminal else Console(width=240)


def table(rows: Sequence[PartitionLag], title: str = "consumer lag") -> Table:
    t = Table(title=title, title_justify="left")
    t.add_column("group", overflow="fold")
    t.add_column("topic", overflow="fold")
    for name in ("part", "committed", "log start", "log end", "lag msgs", "lag s"):  # never wrapped
        t.add_column(name, justify="right", no_wrap=True)
    t.add_column("status", no_wrap=True)
    for r in rows:
        status = r.status if not r.expired_messages else f"{r.status} ({r.expired_messages} lost)"
        lag_style = "bold" if r.lag_messages else "dim"
        t.add_row(
            r.group,
            r.topic,
            str(r.partition),
            _fmt_offset(r.committed_offset),
            str(r.log_start_offset),
            str(r.log_end_offset),
            f"[{lag_style}]{r.lag_messages:,}[/]",
            _fmt_seconds(r),
            f"[{STATUS_STYLE.get(r.status, '')}]{status}[/]" if STATUS_STYLE.get(r.status) else status,
        )
    if not rows:
        t.caption = "no partitions: the groups have no commits, no members and no known topics"
        return t
    totals = []
    for group, g in report(rows)["groups"].items():
        seconds = "?" if g["lag_seconds"] is None else f"{g['lag_seconds']:,.1f} s"
        totals.append(f"{group}: {g['lag_messages']:,} msgs, {seconds}")
    t.caption = " | ".join(totals)
    return t


def show(
    measure: Callable[[], list[PartitionLag]],
    as_json: bool,
    watch: bool,
    interval_s: float,
    console: Console | None = None,
) -> None:
    """Print once, or every ``interval_s`` until interrupted: a live table, or JSON lines."""
    console = console or make_console()
    try:
        if as_json:
            while True:
                doc = report(measure())
                print(json.dumps(doc, indent=None if watch else 2), flush=True)
                if not watch:
                    return
                time.sleep(interval_s)
        if not watch:
            console.print(table(measure()))
            return
        with Live(table(measure()), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval_s)
                live.update(table(measure(), f"consumer lag at {time.strftime('%H:%M:%S')}"), refresh=True)
    except KeyboardInterrupt:
        pass
