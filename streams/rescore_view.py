"""The rich table ``streamscore rescore`` prints."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from streams.rescore import RescoreResult


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def show(result: RescoreResult, console: Console | None = None) -> None:
    console = console or Console()
    c = result.comparison
    assert c is not None
    console.print(
        f"rescored {result.records} clean records of [bold]{result.source}[/]: {result.produced} predictions "
        f"({c.new.ref}, variant {result.variant}) → {result.topic}"
        + (f", [red]{result.failed} failed[/]" if result.failed else "")
    )
    table = Table(title="versions side by side")
    for col in ("version", "role", "records", "mean score", "fraud", "anomalies", "low confidence"):
        table.add_column(col, justify="left" if col in ("version", "role") else "right")
    for v in (c.baseline, c.new):
        table.add_row(
            v.ref,
            v.role,
            str(v.records),
            _num(v.mean_score, ".4f"),
            str(v.fraud),
            str(v.anomalies),
            str(v.low_confidence),
        )
    console.print(table)
    if c.compared == 0:
        console.print(f"no predictions of {c.baseline.ref} found for these records: nothing to compare")
        return
    console.print(
        f"compared on {c.compared} records: agreement {_num(c.agreement, '.2%')}, "
        f"mean score shift {_num(c.mean_shift, '+.4f')} (mean |shift| {_num(c.mean_abs_shift, '.4f')})"
    )
