"""Analyst commands: ``streamscore replay``, ``rescore`` and ``tail`` (thin wrappers).

Bad input (``BadInput``) is a usage error: usage and message on stderr, exit 2, nothing written.
Infrastructure failures print ``error: ...`` and exit 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from streamscore.analyst.inputs import BadInput, Format
from streamscore.errors import StreamscoreError

FROM_HELP = "Start (inclusive): OFFSET, ISO 8601 time (UTC if no zone), 'now' or relative (-1h, -30m, -2d)."
TO_HELP = "End (exclusive), same forms as --from. Default: the high-water marks taken at start."
PartitionOpt = Annotated[int | None, typer.Option("--partition", "-p", help="Only this partition.", min=0)]
KeyOpt = Annotated[str | None, typer.Option("--key", help="Only records with this key (record id).")]


def _settings():  # type: ignore[no-untyped-def]
    from streamscore.cli import settings

    return settings()


def usage(ctx: typer.Context, exc: BadInput) -> NoReturn:
    raise typer.BadParameter(str(exc), ctx=ctx)


def failed(exc: StreamscoreError) -> NoReturn:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1)


def replay(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Topic to read, e.g. raw.transactions.")],
    start: Annotated[str, typer.Option("--from", help=FROM_HELP)],
    end: Annotated[str | None, typer.Option("--to", help=TO_HELP)] = None,
    partition: PartitionOpt = None,
    key: KeyOpt = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Output format.")] = Format.jsonl,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output file (default: stdout, jsonl/csv).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
) -> None:
    """Export a window of a topic, decoded, without touching any consumer group.

    Bounds are by Kafka record timestamp (or offset): --from inclusive, --to exclusive.
    """
    from streamscore.analyst.inputs import check_window, now_utc, parse_bound
    from streamscore.analyst.output import check_output
    from streamscore.analyst.replay import ReplayRequest
    from streamscore.analyst.replay import replay as run_replay

    try:
        now = now_utc()
        req = ReplayRequest(
            topic,
            parse_bound(start, now, "--from"),
            parse_bound(end, now, "--to") if end is not None else None,
            partition,
            key,
            fmt,
            out,
        )
        check_window(req.start, req.end)
        check_output(req.fmt, req.out)
    except BadInput as exc:
        usage(ctx, exc)
    s = _settings()
    try:
        result = run_replay(s, req, show_progress=not quiet)
    except BadInput as exc:
        usage(ctx, exc)
    except StreamscoreError as exc:
        failed(exc)
    if not quiet:
        where = f" to {out}" if out else ""
        skipped = f", {result.undecodable} undecodable skipped" if result.undecodable else ""
        typer.echo(f"{result.records} records{where} in {result.seconds:.1f}s{skipped}", err=True)


def tail(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Topic to follow.")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the earliest retained record.")
    ] = False,
    partition: PartitionOpt = None,
    key: KeyOpt = None,
    limit: Annotated[int | None, typer.Option("--limit", "-n", help="Stop after N records.", min=1)] = None,
) -> None:
    """Follow a topic, decoded, one JSON line per record (new records only by default); Ctrl-C ends."""
    from streamscore.analyst.tail import TailRequest
    from streamscore.analyst.tail import tail as run_tail

    s = _settings()
    try:
        run_tail(s, TailRequest(topic, from_beginning, partition, key, limit))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    except BadInput as exc:
        usage(ctx, exc)
    except StreamscoreError as exc:
        failed(exc)


def rescore(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="Model to run, NAME:VERSION (e.g. fraud:v2).")],
    start: Annotated[str, typer.Option("--from", help="Window start (inclusive): ISO 8601, 'now' or -1h.")],
    end: Annotated[str | None, typer.Option("--to", help="Window end (exclusive). Default: now.")] = None,
    into: Annotated[
        str,
        typer.Option(
            "--into", help="predictions (variant candidate) or shadow (predictions-shadow.<source>)."
        ),
    ] = "shadow",
    source: Annotated[
        str | None, typer.Option("--source", help="Source (default: the only one configured).")
    ] = None,
    against: Annotated[
        str | None,
        typer.Option("--against", help="Baseline NAME:VERSION (default: processor.primary_model)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
) -> None:
    """Score the clean records of a window with another model version; compare with the baseline."""
    import json

    from streams.rescore import Into, RescoreRequest
    from streams.rescore import rescore as run_rescore
    from streamscore.analyst.inputs import now_utc, parse_model_ref, parse_time

    try:
        now = now_utc()
        if into not in Into.__members__:
            raise BadInput(f"--into must be predictions or shadow, not {into!r}")
        parse_model_ref(model)
        req = RescoreRequest(
            model,
            parse_time(start, now, "--from"),
            parse_time(end, now, "--to") if end is not None else None,
            Into(into),
            source,
            against,
        )
    except BadInput as exc:
        usage(ctx, exc)
    s = _settings()
    try:
        result = run_rescore(s, req, show_progress=not quiet)
    except BadInput as exc:
        usage(ctx, exc)
    except StreamscoreError as exc:
        failed(exc)
    if as_json:
        assert result.comparison is not None
        counts = {
            k: getattr(result, k) for k in ("source", "topic", "variant", "records", "produced", "failed")
        }
        typer.echo(json.dumps(counts | {"comparison": result.comparison.as_dict()}, indent=2))
        return
    from streams.rescore_view import show

    show(result)


def register(app: typer.Typer) -> None:
    """Add the analyst commands to the main ``streamscore`` app."""
    app.command("replay")(replay)
    app.command("rescore")(rescore)
    app.command("tail")(tail)
