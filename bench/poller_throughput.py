"""Poller throughput: records/s from the demo API into Kafka, faults off.

Starts ``streamscore demo-api`` (a fixed backlog of N records, pre-generated) and then
``streamscore poll`` for one unique source, each in its own process, against the local Kafka.
Throughput is measured on the output: the end offsets of ``raw.<source>`` are read every 0.1 s;
the window runs from the first record to the last (poller start-up excluded). CPU per record is
the poller process's CPU time over the same window. A second figure measures the demo API alone
(one client paging through the backlog, no Kafka), since it is the load generator.
Each page size runs ``--repeat`` times (a fresh source each time) and the median is reported:
on a shared 2-core machine single runs vary by 2x. Writes ``bench/results/poller.json``.
Usage: ``python bench/poller_throughput.py [-n 200000] [--page-sizes 1000,2000,5000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import psutil
from confluent_kafka import Consumer, KafkaException, TopicPartition

from streamscore.kafka_config import reader_config
from streamscore.settings import REPO_ROOT, load_settings
from streamscore.topics import ensure_topics, raw_topic

RESULTS = REPO_ROOT / "bench" / "results" / "poller.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(args: list[str], env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
    out = open(f"/tmp/streamscore-bench-{log}", "wb")  # noqa: SIM115 (lives with the process)
    return subprocess.Popen([sys.executable, "-m", "streamscore.cli", *args], env=env, stdout=out, stderr=out)


async def wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer in {timeout_s}s")
            await asyncio.sleep(0.2)


async def api_only(url: str, page_size: int) -> tuple[int, float]:
    """Page through the whole backlog with one client; (records, seconds)."""
    records = 0
    cursor = None
    start = time.perf_counter()
    async with aiohttp.ClientSession() as http:
        while True:
            params = {"limit": str(page_size)} | ({"cursor": cursor} if cursor else {})
            async with http.get(f"{url}/transactions", params=params) as resp:
                body = await resp.read()
            page = json.loads(body)
            records += len(page["data"])
            cursor = page["next_cursor"]
            if not page["has_more"]:
                return records, time.perf_counter() - start


def end_offsets(consumer: Consumer, topic: str, partitions: int) -> int:
    """Sum of the partitions' end offsets; -1 when a broker cannot tell yet (new topic)."""
    total = 0
    for p in range(partitions):
        try:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)
        except KafkaException:
            return -1
        total += high
    return total


def measure(settings: Any, topic: str, n: int, poller: psutil.Process, timeout_s: float) -> dict[str, float]:
    """Watch the topic's end offsets until n records (plus transaction markers) are in."""
    consumer = Consumer(reader_config(settings, "bench-poller"))
    parts = settings.kafka.topic_partitions
    try:
        first_t = last_t = 0.0
        first_n = seen = 0
        cpu0 = cpu1 = 0.0
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            now = time.perf_counter()
            count = end_offsets(consumer, topic, parts)
            if count < 0:
                time.sleep(0.1)
                continue
            if count and not first_t:
                first_t, first_n = now, count
                t = poller.cpu_times()
                cpu0 = t.user + t.system
            if count > seen:  # offsets also count transaction markers: wait until they settle
                seen, last_t = count, now
                t = poller.cpu_times()
                cpu1 = t.user + t.system
            elif count >= n and now - last_t > 1.0:
                break
            time.sleep(0.1)
        else:
            raise TimeoutError(f"{topic}: fewer than {n} records after {timeout_s}s")
    finally:
        consumer.close()
    seconds = last_t - first_t
    records = n - first_n
    return {
        "records": records,
        "seconds": round(seconds, 3),
        "records_per_s": round(records / seconds, 1),
        "poller_cpu_ms_per_1k_records": round((cpu1 - cpu0) / records * 1e6, 2),
    }


def source_env(url: str, page_size: int, base: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    src = {
        "name": f"bench{uuid.uuid4().hex[:8]}",
        "url": f"{url}/transactions",
        "page_size": page_size,
        "rate_limit_per_s": 10_000,
        "poll_interval_s": 0.5,
    }
    env = base | {
        "STREAMSCORE_SOURCES": json.dumps([src]),
        "STREAMSCORE_HEALTH__POLLER_PORT": str(free_port()),
    }
    return src, env


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200_000, help="records in the backlog")
    parser.add_argument("--page-sizes", default="1000,2000,5000", help="poller runs per page size")
    parser.add_argument("--repeat", type=int, default=3, help="runs per page size (median reported)")
    args = parser.parse_args()
    sizes = [int(x) for x in args.page_sizes.split(",")]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    base = os.environ | {
        "STREAMSCORE_LOG_LEVEL": "WARNING",
        "STREAMSCORE_DEMO_API__MAX_PAGE_SIZE": str(max(sizes)),
    }
    api = spawn(["demo-api", "--port", str(port), "--backlog", str(args.n), "--rate", "0"], base, "api.log")
    runs: list[dict[str, Any]] = []
    try:
        t0 = time.perf_counter()
        await wait_http(f"{url}/healthz", timeout_s=300)
        generated_s = time.perf_counter() - t0
        api_records, api_s = await api_only(url, 1000)
        print(f"demo API alone (pages of 1000): {api_records / api_s:,.0f} records/s")
        for size in [s for s in sizes for _ in range(args.repeat)]:
            src, env = source_env(url, size, base)
            settings = load_settings(sources=[src])
            ensure_topics(settings)
            poller = spawn(["poll"], env, "poller.log")
            try:
                proc = psutil.Process(poller.pid)
                result = await asyncio.to_thread(
                    measure, settings, raw_topic(src["name"]), args.n, proc, 600.0
                )
            finally:
                poller.terminate()
                poller.wait(30)
            result = {"page_size": size, **result, "load_avg_1m": round(os.getloadavg()[0], 2)}
            runs.append(result)
            print(
                f"poller, pages of {size}: {result['records_per_s']:,.0f} records/s from the demo API into "
                f"Kafka ({result['records']} records in {result['seconds']}s, "
                f"{result['poller_cpu_ms_per_1k_records']} ms CPU per 1k records)"
            )
    finally:
        api.terminate()
        api.wait(30)
    settings = load_settings()
    report: dict[str, Any] = {
        "benchmark": "poller_throughput",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "config": {
            "backlog": args.n,
            "transactional": True,
            "compression": settings.kafka.compression,
            "linger_ms": settings.kafka.linger_ms,
            "partitions": settings.kafka.topic_partitions,
        },
        "poller_median": [
            {
                "page_size": size,
                "records_per_s": statistics.median(
                    r["records_per_s"] for r in runs if r["page_size"] == size
                ),
                "poller_cpu_ms_per_1k_records": statistics.median(
                    r["poller_cpu_ms_per_1k_records"] for r in runs if r["page_size"] == size
                ),
            }
            for size in sizes
        ],
        "poller_runs": runs,
        "demo_api_alone": {
            "page_size": 1000,
            "records": api_records,
            "seconds": round(api_s, 3),
            "records_per_s": round(api_records / api_s, 1),
            "pregeneration_s": round(generated_s, 1),
        },
    }
    for m in report["poller_median"]:
        print(f"median, pages of {m['page_size']}: {m['records_per_s']:,.0f} records/s")
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
