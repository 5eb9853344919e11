"""Operator commands: ``streamscore lag``, ``streamscore exporter`` and ``streamscore dlq``.

Registered on the main app by :func:`register`; heavy modules are imported inside each command.
"""

from __future__ import annotations

from typing import Annotated

import typer

from streamscore.errors import StreamscoreError

dlq_app = typer.Typer(help="Inspect and redrive dead letters (dlq.<source>).", no_args_is_help=True)

GroupOpt = Annotated[
    list[str] | None,
    typer.Option("--group", "-g", help="Consumer group (repeatable). Default: the pipeline groups."),
]
SourceOpt = Annotated[list[str] | None, typer.Option("--source", help="Source name (repeatable).")]
StageOpt = Annotated[list[str] | None, typer.Option("--stage", help="Stage, e.g. decode (repeatable).")]
SinceOpt = Annotated[str | None, typer.Option(help="From this time: ISO 8601 or an age (15m, 2h, 1d).")]
UntilOpt = Annotated[str | None, typer.Option(help="Up to this time: ISO 8601 or an age.")]
RecordOpt = Annotated[list[str] | None, typer.Option("--record-id", help="Record id (repeatable).")]
OffsetOpt = Annotated[list[int] | None, typer.Option("--offset", help="DLQ offset (repeatable).")]
PartitionOpt = Annotated[int | None, typer.Option(help="DLQ partition (with --offset).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _settings():  # type: ignore[no-untyped-def]
    from streamscore.cli import settings

    return settings()


def _fail(exc: Exception, code: int = 1) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code)


def lag(
    group: GroupOpt = None,
    all_groups: Annotated[bool, typer.Option("--all-groups", help="Every group on the cluster.")] = False,
    as_json: JsonOpt = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes (--watch).")] = 2.0,
) -> None:
    """Consumer lag per group, topic and partition: offsets, messages and seconds behind."""
    from streamscore.lag import LagProbe, pipeline_groups
    from streamscore.lag_view import show

    s = _settings()
    probe = LagProbe(s)
    try:
        groups = probe.all_groups() if all_groups else (group or list(pipeline_groups(s)))
        show(lambda: probe.measure(groups), as_json, watch, interval)
    except StreamscoreError as exc:
        _fail(exc)
    finally:
        probe.close()


def exporter(
    group: GroupOpt = None,
    interval: Annotated[float, typer.Option(help="Seconds between lag measurements.")] = 15.0,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
) -> None:
    """Serve consumer-lag gauges of the pipeline groups on settings.health.exporter_port."""
    import asyncio

    from streamscore.exporter import LagExporter
    from streamscore.lag import pipeline_groups

    s = _settings()
    asyncio.run(LagExporter(s, group or list(pipeline_groups(s)), interval).run(duration))


def _filter(stage, source, since, until, record_id, offset, partition):  # type: ignore[no-untyped-def]
    from streamscore.dlq_tool import LetterFilter, parse_time

    try:
        return LetterFilter(
            stages=set(stage or ()),
            sources=set(source or ()),
            record_ids=set(record_id or ()),
            offsets=set(offset or ()),
            partition=partition,
            since=parse_time(since) if since else None,
            until=parse_time(until) if until else None,
        )
    except ValueError as exc:
        _fail(exc, 2)


@dlq_app.command("list")
def dlq_list(
    source: SourceOpt = None,
    stage: StageOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    record_id: RecordOpt = None,
    limit: Annotated[int, typer.Option(help="At most this many letters.")] = 200,
    last: Annotated[int | None, typer.Option(help="Only the newest N records of each partition.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """One line per dead letter (oldest first): where, when, stage, record id, original position, error."""
    from streamscore.dlq_tool import dlq_topics, read_letters
    from streamscore.dlq_view import letter_json, list_table, print_json, show

    s = _settings()
    flt = _filter(stage, None, since, until, record_id, None, None)
    topics = dlq_topics(s, source or ())
    try:
        letters = list(read_letters(s, topics, flt, limit, last=last))
    except StreamscoreError as exc:
        _fail(exc)
    if as_json:
        print_json([letter_json(x) for x in letters])
    else:
        show(list_table(letters, ", ".join(topics)))


@dlq_app.command("inspect")
def dlq_inspect(
    offset: OffsetOpt = None,
    partition: PartitionOpt = None,
    source: SourceOpt = None,
    stage: StageOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    record_id: RecordOpt = None,
    limit: Annotated[int, typer.Option(help="At most this many letters.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Every header and the value decoded (Avro via the registry, JSON, text, else hex)."""
    from streamscore.dlq_tool import decode_value, dlq_topics, read_letters
    from streamscore.dlq_view import inspect_panel, letter_json, print_json, show
    from streamscore.registry import SchemaRegistry

    s = _settings()
    flt = _filter(stage, None, since, until, record_id, offset, partition)
    registry = SchemaRegistry(s.registry)
    try:
        letters = list(read_letters(s, dlq_topics(s, source or ()), flt, limit))
    except StreamscoreError as exc:
        _fail(exc)
    decoded = [decode_value(x.value, registry) for x in letters]
    if as_json:
        print_json([letter_json(x, d) for x, d in zip(letters, decoded, strict=True)])
        return
    for x, d in zip(letters, decoded, strict=True):
        show(inspect_panel(x, d))
    if not letters:
        typer.echo("no letter matches", err=True)


@dlq_app.command("redrive")
def dlq_redrive(
    offset: OffsetOpt = None,
    partition: PartitionOpt = None,
    source: SourceOpt = None,
    stage: StageOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    record_id: RecordOpt = None,
    all_letters: Annotated[bool, typer.Option("--all", help="Every letter (no other selector).")] = False,
    to: Annotated[str | None, typer.Option(help="Produce here instead of the original topic.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be redriven.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Produce selected letters (original key and bytes) back to their original topic."""
    from streamscore.dlq_tool import dlq_topics, read_letters, redrive
    from streamscore.dlq_view import print_json, redrive_table, show

    s = _settings()
    flt = _filter(stage, None, since, until, record_id, offset, partition)
    if not flt.narrows and not all_letters:
        _fail(
            ValueError("select letters (--offset, --stage, --record-id, --since, --until) or pass --all"), 2
        )
    try:
        letters = list(read_letters(s, dlq_topics(s, source or ()), flt))
        results = redrive(s, letters, to_topic=to, dry_run=dry_run)
    except StreamscoreError as exc:
        _fail(exc)
    if as_json:
        print_json(
            [
                {"from": r.letter.where, "topic": r.topic, "partition": r.partition, "offset": r.offset}
                | {"record_id": r.letter.get("record.id"), "skipped": r.skipped}
                for r in results
            ]
        )
    else:
        show(redrive_table(results))
    if any(r.skipped and r.skipped != "dry run" for r in results):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("lag")(lag)
    app.command("exporter")(exporter)
    app.add_typer(dlq_app, name="dlq")
