"""The ``streamscore`` command. Components are imported inside their commands (lazily), so
``streamscore --help`` and light commands start fast and need no heavy dependency."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from streamscore.errors import ConfigError, StreamscoreError

app = typer.Typer(
    name="streamscore",
    help="Near-real-time ML scoring on Kafka: poll an HTTP API, clean, score, store.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
topics_app = typer.Typer(help="Pipeline topics.", no_args_is_help=True)
schemas_app = typer.Typer(help="Avro contracts in the schema registry.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
app.add_typer(schemas_app, name="schemas")


def settings():  # type: ignore[no-untyped-def]
    """Validated settings, or exit 2 with the setting named (bad config stops at start)."""
    from streamscore.log import configure_logging
    from streamscore.settings import load_settings

    try:
        loaded = load_settings()
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(loaded.log_format, loaded.log_level)
    return loaded


def fail(exc: StreamscoreError, code: int = 1) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(code)


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        from streamscore import __version__

        typer.echo(__version__)
        raise typer.Exit(0)


@app.command("config")
def show_config() -> None:
    """Print the effective configuration (secrets masked) and exit; exit 2 if it is invalid."""
    s = settings()
    typer.echo(json.dumps(s.model_dump(mode="json"), indent=2, default=str))


@topics_app.command("create")
def topics_create() -> None:
    """Create the pipeline's topics from the declared table (idempotent)."""
    from streamscore.topics import ensure_topics, pipeline_topics

    s = settings()
    try:
        created = ensure_topics(s)
    except StreamscoreError as exc:
        fail(exc)
    for spec in pipeline_topics(s):
        state = "created" if spec.name in created else "exists"
        typer.echo(f"{spec.name:40} partitions={spec.partitions:<3} {state}")


@schemas_app.command("register")
def schemas_register() -> None:
    """Register every contract under ``<topic>-value`` with BACKWARD compatibility."""
    from streamscore.bootstrap import register_contracts
    from streamscore.registry import SchemaRegistry

    s = settings()
    try:
        ids = register_contracts(s, SchemaRegistry(s.registry))
    except StreamscoreError as exc:
        fail(exc)
    for subject, schema_id in ids.items():
        typer.echo(f"{subject:45} id={schema_id}")


# Component commands are added below, each a thin wrapper around its module.

from streamscore import ops_cli  # noqa: E402  (operator commands: lag, exporter, dlq)

ops_cli.register(app)

from streamscore.analyst import cli as analyst_cli  # noqa: E402  (analyst commands: replay, rescore, tail)

analyst_cli.register(app)


@app.command("sink")
def sink() -> None:
    """Run the sink: predictions.<source> → MongoDB (health on settings.health.sink_port)."""
    from streams.sink import main as sink_main

    sink_main(settings())


@app.command("run")
def run_pipeline(
    records: Annotated[
        int | None, typer.Option("--records", min=1, help="Exit 0 once N records are stored in MongoDB.")
    ] = None,
    duration: Annotated[
        float | None, typer.Option("--duration", min=0.1, help="Exit 0 after S seconds.")
    ] = None,
    demo_api: Annotated[
        bool | None,
        typer.Option("--demo-api/--no-demo-api", help="Start the demo API (default: if a source uses it)."),
    ] = None,
    plain: Annotated[
        bool | None, typer.Option("--plain/--live", help="Progress lines or the live view (default: TTY).")
    ] = None,
    every: Annotated[float, typer.Option("--every", min=0.5, help="Seconds between progress lines.")] = 5.0,
    grace: Annotated[float, typer.Option("--grace", min=1, help="Seconds before SIGKILL on stop.")] = 30.0,
    logs: Annotated[
        Path | None, typer.Option("--logs", help="Folder of the children's logs (default .stack/logs/run).")
    ] = None,
) -> None:
    """Run the whole pipeline (demo API, poller, processor, sink) supervised, with a live view."""
    from streamscore.run import RunOptions
    from streamscore.run import main as run_main

    opts = RunOptions(records, duration, demo_api, plain, every, grace)
    if logs is not None:
        opts.log_dir = logs
    raise typer.Exit(run_main(settings(), opts))


@app.command("process")
def process() -> None:
    """Run the processor: raw → clean → predictions (health on settings.health.processor_port)."""
    from streams.processor import main as process_main

    process_main(settings())


@app.command("train")
def train(
    version: Annotated[list[str] | None, typer.Option("--version", help="v1, v2 (default: all).")] = None,
    n: Annotated[int, typer.Option(help="Generated records.")] = 60_000,
    seed: Annotated[int, typer.Option(help="Seed of generator, split and model.")] = 7,
    out: Annotated[str | None, typer.Option(help="Models folder (default: processor.models_dir).")] = None,
) -> None:
    """Train the demo fraud models from the demo generator; write ONNX + card.json per version."""
    from pathlib import Path

    from streams.training import RECIPES
    from streams.training import train as train_model

    target = Path(out) if out else settings().processor.models_dir
    for name in version or list(RECIPES):
        if name not in RECIPES:
            typer.echo(f"unknown version {name}; known: {', '.join(RECIPES)}", err=True)
            raise typer.Exit(2)
        card = train_model(name, target, n=n, seed=seed)
        typer.echo(
            f"{card['name']}:{card['version']} {card['algorithm']}: "
            f"holdout AUC {card['metrics']['holdout_auc']:.4f}, thresholds {card['thresholds']}, "
            f"sha256 {card['onnx']['sha256'][:12]}"
        )


@app.command("demo-api")
def demo_api(
    port: Annotated[int | None, typer.Option(help="Port (default: settings.demo_api.port).")] = None,
    rate: Annotated[float | None, typer.Option(help="New records per second (0 = backlog only).")] = None,
    backlog: Annotated[int | None, typer.Option(help="Records available at start.")] = None,
) -> None:
    """Serve the demo transactions API (pagination, incremental cursors, injected faults)."""
    import asyncio
    import contextlib

    from producers.demo_api.server import serve_forever

    s = settings().demo_api
    given = {"port": port, "rate_per_s": rate, "backlog": backlog}
    update = {k: v for k, v in given.items() if v is not None}
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(s.model_copy(update=update)))


@app.command("poll")
def poll(
    source: Annotated[list[str] | None, typer.Option("--source", help="Poll only this source.")] = None,
) -> None:
    """Poll the configured HTTP sources into raw.<source> (health on settings.health.poller_port)."""
    import asyncio

    from producers.poller import run_poller

    try:
        asyncio.run(run_poller(settings(), source))
    except ConfigError as exc:
        fail(exc, code=2)
    except StreamscoreError as exc:
        fail(exc)


def run() -> None:
    """Console-script entry point."""
    try:
        app()
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    run()
