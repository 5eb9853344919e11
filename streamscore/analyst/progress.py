"""Progress on stderr (rich): percent of the planned offsets, records written, offsets/s, elapsed."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Offsets read per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- rec/s" if speed is None else f"{speed:,.0f} rec/s", style="progress.data.speed")


def progress_bar(enabled: bool = True) -> Progress:
    """A progress display on stderr; ``task.fields['records']`` is the count written."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=24),
        TaskProgressColumn(),
        TextColumn("{task.fields[records]:,} records"),
        RateColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )
