"""``streamscore dlq`` output: rich tables and panels, or JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table

from streamscore.dlq_tool import Decoded, Letter, Redriven, decode_key


def letter_json(letter: Letter, decoded: Decoded | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "timestamp": letter.timestamp.isoformat(timespec="milliseconds"),
        "key": decode_key(letter.key),
        "headers": {k: v.decode("utf-8", "replace") for k, v in letter.headers},
        "dlq": letter.context,
    }
    if decoded is not None:
        doc["value"] = {"kind": decoded.kind, "value": decoded.value, "note": decoded.note}
    return doc


def print_json(docs: Sequence[dict[str, Any]]) -> None:
    print(json.dumps(list(docs), indent=2, default=str))


def list_table(letters: Sequence[Letter], title: str) -> Table:
    t = Table(title=title, title_justify="left")
    for name in ("topic:part:offset", "time (UTC)", "stage", "record id", "original", "error"):
        t.add_column(name, overflow="fold")
    for letter in letters:
        topic, part, off = letter.original
        original = f"{topic}:{part}:{off}" if topic else "-"
        error = letter.get("exception.class") or ""
        error = f"{error.rsplit('.', 1)[-1]}: " if error else ""
        t.add_row(
            letter.where,
            letter.timestamp.strftime("%Y-%m-%d %H:%M:%S"),
            letter.stage,
            letter.get("record.id") or decode_key(letter.key) or "-",
            original,
            (error + (letter.get("exception.message") or ""))[:160],
        )
    t.caption = f"{len(letters)} letter(s)"
    return t


def inspect_panel(letter: Letter, decoded: Decoded) -> Panel:
    headers = Table(show_header=False, box=None, pad_edge=False)
    headers.add_column(style="cyan", no_wrap=True)
    headers.add_column(overflow="fold")
    headers.add_row("timestamp", letter.timestamp.isoformat(timespec="milliseconds"))
    headers.add_row("key", decode_key(letter.key) or "-")
    for name, value in letter.headers:
        if not name.endswith("stacktrace"):
            headers.add_row(name, value.decode("utf-8", "replace"))
    body = json.dumps(decoded.value, indent=2, default=str) if decoded.kind != "text" else decoded.value
    parts: list[Any] = [
        headers,
        f"\n[bold]value[/] ({decoded.kind}){' — ' + decoded.note if decoded.note else ''}",
    ]
    parts.append(Syntax(str(body), "json" if decoded.kind != "text" else "text", word_wrap=True))
    stack = letter.get("exception.stacktrace")
    if stack:
        parts += ["\n[bold]stack[/]", Syntax(stack, "pytb", word_wrap=True)]
    return Panel(Group(*parts), title=letter.where, title_align="left", expand=False)


def redrive_table(results: Sequence[Redriven]) -> Table:
    t = Table(title="redrive", title_justify="left")
    for name in ("from", "record id", "to", "result"):
        t.add_column(name, overflow="fold")
    for r in results:
        to = f"{r.topic}:{'?' if r.partition is None else r.partition}" if r.topic else "-"
        if r.offset is not None:
            to += f":{r.offset}"
        t.add_row(r.letter.where, r.letter.get("record.id") or "-", to, r.skipped or "[green]redriven[/]")
    done = sum(1 for r in results if r.offset is not None)
    t.caption = f"{done} of {len(results)} redriven"
    return t


def show(renderable: Any) -> None:
    console = Console()
    (console if console.is_terminal else Console(width=240)).print(renderable)
