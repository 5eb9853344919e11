"""Processor throughput, raw → predictions, beside the hand-written floor loop (bench/peers/floor.py).

Pre-fills one unique ``raw.<source>`` with N demo records (the demo generator, dirty variants on,
so ~0.5% go to the DLQ), then runs each contender on that same topic in its own process and
consumer group:

- processor: ``streamscore process`` (Faust: clean agent → clean topic → score agent), primary
  model only, default batch settings;
- processor, fused mode (``STREAMSCORE_PROCESSOR__FUSED=true``): one agent cleans and scores,
  still writing the clean topic (reads its own copy of the same records);
- floor: ``bench/peers/floor.py`` (confluent-kafka consume(500) → fastavro → pydantic → ONNX → produce);
- Faust alone: ``bench/peers/faust_noop.py``, the same take_events loop doing nothing (the
  framework's own cost per consumed record; the two-stage processor pays it twice).

Throughput is measured on the outputs (predictions + dead letters, by polling end offsets every
0.1 s) from the first output to the last, so start-up is excluded; CPU per record is the
contender process's CPU time (user + system, all threads) over the same window.
Writes ``bench/results/processor.json``. Usage: ``python bench/processor_throughput.py [-n 30000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
    cmd: list[str], env: dict[str, str], settings: Settings, outs: list[str], n: int, limit_s: float
) -> dict[str, Any]:
    watcher = Consumer(reader_config(settings, "bench-watch"))
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    start = time.monotonic()
    first: tuple[float, int, float] | None = None
    last: tuple[float, int, float] = (start, 0, 0.0)
    try:
        while time.monotonic() - start < limit_s:
            done = count(watcher, outs)
            now = time.monotonic()
            cpu = sum(ps.cpu_times()[:2])
            if done and first is None:
                first = (now, done, cpu)
            if done > last[1]:
                last = (now, done, cpu)
            if done >= n or proc.poll() is not None:
                break
            time.sleep(0.1)
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        watcher.close()
    if first is None or last[1] < n:
        tail = err.decode(errors="replace")[-2000:]
        raise SystemExit(f"{cmd[-1]}: {last[1]}/{n} outputs within {limit_s}s\n{tail}")
    span = last[0] - first[0]
    records = last[1] - first[1]
    return {
        "records": n,
        "startup_s": round(first[0] - start, 2),
        "measured_records": records,
        "measured_s": round(span, 3),
        "records_per_s": round(records / span, 1),
        "cpu_ms_per_record": round(1000 * (last[2] - first[2]) / records, 4),
    }


def measure_noop(settings: Settings, topic: str, n: int, tag: str, limit_s: float) -> dict[str, Any]:
    """Faust's own cost on the same topic (bench/peers/faust_noop.py reports itself)."""
    cmd = [sys.executable, "bench/peers/faust_noop.py", topic, str(n), f"bench-noop-{tag}"]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=limit_s)
    lines = [line[line.index("{") :] for line in done.stdout.splitlines() if "{" in line]  # after tty codes
    if not lines:
        raise SystemExit(f"faust_noop failed:\n{done.stderr[-2000:]}")
    return dict(json.loads(lines[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--limit-s", type=float, default=300)
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    source, fused, floor_out = f"bench{tag}", f"benchfused{tag}", f"benchfloor{tag}"
    settings = load_settings(sources=[{"name": source}, {"name": fused}, {"name": floor_out}])
    for name in (source, fused):  # the fused processor needs its own output topics: same records
        print(f"pre-filling raw.{name} with {args.n} records ...", flush=True)
        fill(settings, name, args.n, args.seed)
    base = os.environ | {"STREAMSCORE_LOG_LEVEL": "WARNING", "STREAMSCORE_LOG_FORMAT": "json"}
    proc_env = base | {
        "STREAMSCORE_SOURCES": json.dumps([{"name": source}]),
        "STREAMSCORE_PROCESSOR__APP_ID": f"bench-processor-{tag}",
        "STREAMSCORE_HEALTH__PROCESSOR_PORT": "0",
    }
    print("processor ...", flush=True)
    processor = measure(
        [sys.executable, "-m", "streamscore.cli", "process"],
        proc_env,
        settings,
        [predictions_topic(source), dlq_topic(source)],
        args.n,
        args.limit_s,
    )
    print(f"  {processor}", flush=True)
    print("processor, fused mode ...", flush=True)
    fused_env = proc_env | {
        "STREAMSCORE_SOURCES": json.dumps([{"name": fused}]),
        "STREAMSCORE_PROCESSOR__APP_ID": f"bench-processor-fused-{tag}",
        "STREAMSCORE_PROCESSOR__FUSED": "true",
    }
    processor_fused = measure(
        [sys.executable, "-m", "streamscore.cli", "process"],
        fused_env,
        settings,
        [predictions_topic(fused), dlq_topic(fused)],
        args.n,
        args.limit_s,
    )
    print(f"  {processor_fused}", flush=True)
    print("floor ...", flush=True)
    floor_env = base | {"STREAMSCORE_SOURCES": json.dumps([{"name": floor_out}])}
    floor = measure(
        [sys.executable, "bench/peers/floor.py", raw_topic(source), floor_out, f"bench-floor-{tag}"],
        floor_env,
        settings,
        [predictions_topic(floor_out), dlq_topic(floor_out)],
        args.n,
        args.limit_s,
    )
    print(f"  {floor}", flush=True)
    print("faust no-op agent ...", flush=True)
    noop = measure_noop(settings, raw_topic(source), args.n, tag, args.limit_s)
    print(f"  {noop}", flush=True)
    ratio = processor["records_per_s"] / floor["records_per_s"]
    result = {
        "benchmark": "processor raw -> predictions",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "records": args.n,
        "processor": processor,
        "processor_fused": processor_fused,
        "floor": floor,
        "faust_noop": noop,
        "processor_vs_floor": round(ratio, 3),
        "processor_fused_vs_floor": round(processor_fused["records_per_s"] / floor["records_per_s"], 3),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "target": ">= 0.5",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    p, f, pf = processor, floor, processor_fused
    print(
        f"processor {p['records_per_s']:.0f} rec/s ({p['cpu_ms_per_record']:.3f} ms CPU/rec), "
        f"floor {f['records_per_s']:.0f} rec/s ({f['cpu_ms_per_record']:.3f} ms CPU/rec), "
        f"ratio {ratio:.2f} (target >= 0.5); fused {pf['records_per_s']:.0f} rec/s "
        f"({pf['cpu_ms_per_record']:.3f} ms CPU/rec), ratio {result['processor_fused_vs_floor']:.2f} "
        f"-> {RESULTS.relative_to(REPO_ROOT)}"
    )


if __name__ == "__main__":
    main()
