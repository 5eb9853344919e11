"""Processor throughput, raw → predictions, beside the hand-written floor loop (bench/peers/floor.py).

Pre-fills one unique ``raw.<source>`` with N demo records (the demo generator, dirty variants on,
so ~0.5% go to the DLQ), then runs each contender on that same topic in its own process and
consumer group:

- processor: ``streamscore process`` as shipped (one agent per source cleans and scores each raw
  batch, writing clean and predictions), primary model only, default batch settings;
- processor, two agents (``STREAMSCORE_PROCESSOR__FUSED=false``): clean agent → clean topic →
  score agent, in one process;
- processor, one process per stage (``STREAMSCORE_PROCESSOR__STAGES``, own app ids): the two
  agents in two processes, so the stages pipeline instead of taking turns;
- floor: ``bench/peers/floor.py`` (confluent-kafka consume(500) → fastavro → pydantic → ONNX →
  produce; it writes no clean topic);
- Faust alone: ``bench/peers/faust_noop.py``, the processor's batch loop
  (:func:`streams.batch_stream.batches`) doing nothing, and the same loop on Faust's own stream
  path (``take_events``) for comparison: the framework's cost per consumed record.

Throughput is measured on the outputs (predictions + dead letters, by polling end offsets every
0.1 s) from the first output to the last, so start-up is excluded; CPU per record is the
contender process's CPU time (user + system, all threads) over the same window.
Each processor variant reads its own copy of the same records (its outputs must not mix).
Writes ``bench/results/processor.json`` (every round and the medians).
Usage: ``python bench/processor_throughput.py [-n 30000] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import psutil
from confluent_kafka import Consumer, Producer, TopicPartition

from streamscore.bootstrap import codec, prepare
from streamscore.kafka_config import producer_config, reader_config
from streamscore.settings import REPO_ROOT, Settings, load_settings
from streamscore.topics import dlq_topic, predictions_topic, raw_topic

RESULTS = REPO_ROOT / "bench" / "results" / "processor.json"


def fill(settings: Settings, source: str, n: int, seed: int) -> None:
    from producers.demo_api.generator import generate

    registry = prepare(settings, "bench", timeout_s=60)
    raw = codec(registry, settings, raw_topic(source))
    producer = Producer(producer_config(settings, "bench-fill"))
    fetched = datetime.now(UTC)
    for i, (record, _) in enumerate(generate(n, seed)):
        rid = str(record.get("id") or f"missing-{i}")
        value = raw.encode(
            {
                "source": source,
                "record_id": rid,
                "fetched_at": fetched,
                "cursor": None,
                "payload": json.dumps(record),
                "trace_id": uuid.uuid4().hex,
            }
        )
        while True:
            try:
                producer.produce(raw_topic(source), key=rid.encode(), value=value)
                break
            except BufferError:
                producer.poll(0.1)
    if producer.flush(60):
        raise SystemExit("could not pre-fill the raw topic")


def count(consumer: Consumer, topics: list[str]) -> int:
    total = 0
    for topic in topics:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            total += high - low
    return total


def measure(
    procs: list[tuple[list[str], dict[str, str]]], settings: Settings, outs: list[str], n: int, limit_s: float
) -> dict[str, Any]:
    """Run the contender's process(es) until ``n`` outputs exist; rate and CPU from first to last."""
    watcher = Consumer(reader_config(settings, "bench-watch"))
    running = [
        subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for cmd, env in procs
    ]
    handles = [psutil.Process(p.pid) for p in running]
    start = time.monotonic()
    first: tuple[float, int, float] | None = None
    last: tuple[float, int, float] = (start, 0, 0.0)
    try:
        while time.monotonic() - start < limit_s:
            done = count(watcher, outs)
            now = time.monotonic()
            cpu = sum(sum(h.cpu_times()[:2]) for h in handles)
            if done and first is None:
                first = (now, done, cpu)
            if done > last[1]:
                last = (now, done, cpu)
            if done >= n or any(p.poll() is not None for p in running):
                break
            time.sleep(0.1)
    finally:
        errors = []
        for proc in running:
            proc.terminate()
        for proc in running:
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            errors.append(err.decode(errors="replace")[-1500:])
        watcher.close()
    if first is None or last[1] < n:
        raise SystemExit(f"{procs[0][0][-1]}: {last[1]}/{n} outputs within {limit_s}s\n" + "\n".join(errors))
    span = last[0] - first[0]
    records = last[1] - first[1]
    return {
        "records": n,
        "processes": len(procs),
        "startup_s": round(first[0] - start, 2),
        "measured_records": records,
        "measured_s": round(span, 3),
        "records_per_s": round(records / span, 1),
        "cpu_ms_per_record": round(1000 * (last[2] - first[2]) / records, 4),
    }


def measure_noop(
    settings: Settings, topic: str, n: int, tag: str, limit_s: float, extra: list[str]
) -> dict[str, Any]:
    """Faust's own cost on the same topic (bench/peers/faust_noop.py reports itself)."""
    cmd = [sys.executable, "bench/peers/faust_noop.py", topic, str(n), f"bench-noop-{tag}", *extra]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=limit_s)
    lines = [line[line.index("{") :] for line in done.stdout.splitlines() if "{" in line]  # after tty codes
    if not lines:
        raise SystemExit(f"faust_noop failed:\n{done.stderr[-2000:]}")
    return dict(json.loads(lines[-1]))


def run_round(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """One measurement of every contender on fresh copies of the same records."""
    tag = uuid.uuid4().hex[:8]
    names = {k: f"bench{k}{tag}" for k in ("default", "two", "split", "floor")}
    settings = load_settings(sources=[{"name": n} for n in names.values()])
    for key in ("default", "two", "split"):  # each processor variant writes its own topics
        print(f"pre-filling raw.{names[key]} with {args.n} records ...", flush=True)
        fill(settings, names[key], args.n, args.seed)
    base = os.environ | {
        "STREAMSCORE_LOG_LEVEL": "WARNING",
        "STREAMSCORE_LOG_FORMAT": "json",
        "STREAMSCORE_HEALTH__PROCESSOR_PORT": "0",
    }
    process = [sys.executable, "-m", "streamscore.cli", "process"]

    def env(key: str, **extra: str) -> dict[str, str]:
        return base | {"STREAMSCORE_SOURCES": json.dumps([{"name": names[key]}])} | extra

    def outs(key: str) -> list[str]:
        return [predictions_topic(names[key]), dlq_topic(names[key])]

    app = f"bench-processor-{tag}"
    contenders: dict[str, list[tuple[list[str], dict[str, str]]]] = {
        "processor": [(process, env("default", STREAMSCORE_PROCESSOR__APP_ID=app))],
        "processor_two_agents": [
            (
                process,
                env("two", STREAMSCORE_PROCESSOR__APP_ID=f"{app}-two", STREAMSCORE_PROCESSOR__FUSED="false"),
            )
        ],
        "processor_process_per_stage": [
            (
                process,
                env(
                    "split",
                    STREAMSCORE_PROCESSOR__APP_ID=f"{app}-clean",
                    STREAMSCORE_PROCESSOR__STAGES='["clean"]',
                ),
            ),
            (
                process,
                env(
                    "split",
                    STREAMSCORE_PROCESSOR__APP_ID=f"{app}-score",
                    STREAMSCORE_PROCESSOR__STAGES='["score"]',
                ),
            ),
        ],
        "floor": [
            (
                [
                    sys.executable,
                    "bench/peers/floor.py",
                    raw_topic(names["default"]),
                    names["floor"],
                    f"{app}-floor",
                ],
                env("floor"),
            )
        ],
    }
    found: dict[str, dict[str, Any]] = {}
    for name, procs in contenders.items():
        print(f"{name} ...", flush=True)
        key = {
            "processor": "default",
            "processor_two_agents": "two",
            "processor_process_per_stage": "split",
        }.get(name, "floor")
        found[name] = measure(procs, settings, outs(key), args.n, args.limit_s)
        print(f"  {found[name]}", flush=True)
    for name, extra in (("faust_noop", []), ("faust_noop_stream_path", ["--faust-stream"])):
        print(f"{name} ...", flush=True)
        found[name] = measure_noop(
            settings, raw_topic(names["default"]), args.n, f"{tag}-{name}", args.limit_s, extra
        )
        print(f"  {found[name]}", flush=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--limit-s", type=float, default=300)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rounds = [run_round(args) for _ in range(args.rounds)]
    median = {
        name: {
            "records_per_s": statistics.median(r[name]["records_per_s"] for r in rounds),
            "cpu_ms_per_record": statistics.median(r[name]["cpu_ms_per_record"] for r in rounds),
        }
        for name in rounds[0]
    }
    floor = median["floor"]
    ratios = {
        f"{name}_vs_floor": round(m["records_per_s"] / floor["records_per_s"], 3)
        for name, m in median.items()
        if name != "floor"
    }
    result = {
        "benchmark": "processor raw -> predictions",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "records": args.n,
        "rounds": rounds,
        "median": median,
        "ratios": ratios,
        "target": "processor_vs_floor >= 0.5",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    load_after = os.getloadavg()[0]
    print(
        f"\nmedian of {args.rounds} round(s), {args.n} records, load {load_before:.1f} -> {load_after:.1f}:"
    )
    for name, m in median.items():
        ratio = ratios.get(f"{name}_vs_floor", 1.0)
        rate, cpu = m["records_per_s"], m["cpu_ms_per_record"]
        print(f"  {name:30} {rate:8.0f} rec/s {cpu:7.3f} ms CPU/rec  x{ratio:.2f} floor")
    print(f"-> {RESULTS.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
