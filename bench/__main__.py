"""``python -m bench`` (``make bench``): the end-to-end harness over streamscore and its peers.

Writes ``bench/results/e2e-<time>.json`` and regenerates the "End-to-end harness" section of
``docs/benchmarks.md`` with its plots. ``--quick`` is a short run for trying things out;
``--soak`` adds a 10-minute run at 50 % of the sustainable rate (RSS growth).
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from bench.harness import PIPELINES, Options, bench_pipeline, machine_facts, new_tag
from bench.report import RESULTS_DIR, compare, write_report

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(
    peers: Annotated[
        str,
        typer.Option(help="Comma-separated peers to run beside streamscore: quix,faststream,floor, or none."),
    ] = "quix,faststream,floor",
    quick: Annotated[bool, typer.Option(help="Short steps and windows (minutes, not tens).")] = False,
    duration: Annotated[float | None, typer.Option(help="Seconds of each latency window.")] = None,
    step: Annotated[float | None, typer.Option(help="Seconds of each search step.")] = None,
    start_rate: Annotated[float, typer.Option(help="First offered rate of the search (records/s).")] = 500,
    refine: Annotated[int | None, typer.Option(help="Bisection steps after the first failure.")] = None,
    rate: Annotated[
        float | None, typer.Option(help="Skip the search; treat this rate as sustainable.")
    ] = None,
    soak: Annotated[bool, typer.Option(help="10-minute soak of streamscore at 50% of its rate.")] = False,
    profile: Annotated[bool, typer.Option(help="Add a py-spy window at 80% after the others.")] = False,
    soak_s: Annotated[float, typer.Option(help="Soak length in seconds.")] = 600,
    only_streamscore: Annotated[bool, typer.Option(help="Alias of --peers none.")] = False,
    two_agents: Annotated[
        bool, typer.Option(help="Also run streamscore with processor.fused=false (clean and score agents).")
    ] = False,
    pipelines: Annotated[
        str | None, typer.Option(help="Exactly these pipelines, e.g. floor (overrides --peers).")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Extra STREAMSCORE_X=Y for every process (tuning).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Result file (default bench/results/e2e-<time>.json).")
    ] = None,
    no_report: Annotated[bool, typer.Option(help="Do not rewrite docs/benchmarks.md.")] = False,
    doc: Annotated[Path | None, typer.Option(help="Report file (default docs/benchmarks.md).")] = None,
    keep: Annotated[bool, typer.Option(help="Keep topics, groups and databases of the run.")] = False,
) -> None:
    """Run the end-to-end benchmark and write its results."""
    chosen = [] if only_streamscore or peers == "none" else [p.strip() for p in peers.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PIPELINES or p == "streamscore"]
    if unknown:
        raise typer.BadParameter(f"unknown peers {unknown}; choose from quix, faststream, floor")
    env = dict(kv.split("=", 1) for kv in (set_ or []))
    names = (
        pipelines.split(",")
        if pipelines
        else ["streamscore", *(["streamscore-two-agents"] if two_agents else []), *chosen]
    )
    unknown = [n for n in names if n not in PIPELINES]
    if unknown:
        raise typer.BadParameter(f"unknown pipelines {unknown}; choose from {', '.join(PIPELINES)}")
    options = Options(
        pipelines=names,
        start_rate=start_rate,
        step_s=step or (8.0 if quick else 20.0),
        refine=refine if refine is not None else (1 if quick else 2),
        warm_s=3.0 if quick else 5.0,
        measure_s=duration or (8.0 if quick else 30.0),
        fixed_rate=rate,
        soak_s=soak_s if soak else 0.0,
        env=env,
        keep=keep,
        profile=profile,
    )
    tag = new_tag()
    started = datetime.now(UTC)
    document: dict[str, Any] = {
        "benchmark": "end-to-end: demo API -> poller -> pipeline -> MongoDB",
        "tag": tag,
        "date": started.isoformat(timespec="seconds"),
        "command": "make bench BENCH_ARGS='" + " ".join(sys.argv[1:]) + "'",
        "options": {k: v for k, v in vars(options).items() if k != "env"} | {"env": env},
        "machine": machine_facts(),
        "pipelines": {},
    }
    for name in options.pipelines:
        typer.echo(f"[{time.strftime('%H:%M:%S')}] {name} ...")
        result = bench_pipeline(PIPELINES[name], tag, options)
        document["pipelines"][name] = result
        typer.echo(f"  {summary(result)}")
    document["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    document["comparison"] = compare(document)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = out or RESULTS_DIR / f"e2e-{started.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(document, indent=1, default=str) + "\n")
    typer.echo(f"results: {path}")
    if not no_report:
        typer.echo(f"report: {write_report(document, path, doc) if doc else write_report(document, path)}")
    for line in document["comparison"].get("lines", []):
        typer.echo(line)


def summary(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"ERROR {result['error']}"
    parts = [f"sustainable {result.get('sustainable_per_s')} rec/s"]
    for phase in result.get("phases", []):
        lat = phase["latency_fetch_to_mongo_ack"]
        parts.append(
            f"{phase['label']}: p50 {lat.get('p50_ms')} p99 {lat.get('p99_ms')} ms, "
            f"{phase['pipeline_cpu_ms_per_1000']} CPU-ms/1000"
        )
    return "; ".join(parts)


if __name__ == "__main__":
    app()
