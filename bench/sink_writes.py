"""Sink write throughput: documents/s of one sink batch loop against the configured MongoDB server.

``python -m bench.sink_writes [--docs 5000] [--batch 500]`` writes prediction documents through
:class:`streams.mongo_writer.MongoWriter` (the sink's own code, no Kafka) in each write mode,
first as new documents, then the same ids again (a re-delivery), in a throwaway database, and
prints and saves ``bench/results/sink_writes.json``. It is why the sink picks ``insert-first`` on
FerretDB: see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import bson
from bson.raw_bson import RawBSONDocument

from streams.mongo_writer import MongoWriter
from streams.sink import to_document
from streamscore.settings import REPO_ROOT, load_settings

OUT = REPO_ROOT / "bench" / "results" / "sink_writes.json"


def documents(n: int, offset: int = 0) -> list[RawBSONDocument]:
    now = datetime.now(UTC)
    out = []
    for i in range(offset, offset + n):
        score = (i % 100) / 100
        prediction: dict[str, Any] = {
            "record_id": f"txn_{i:012d}",
            "source": "bench",
            "event_time": now - timedelta(seconds=5),
            "model_name": "fraud",
            "model_version": "v1",
            "variant": "primary",
            "score": score,
            "label": "fraud" if score >= 0.5 else "legit",
            "confidence": max(score, 1 - score),
            "low_confidence": 0.4 < score < 0.6,
            "anomaly": i % 17 == 0,
            "reasons": ["amount_eur", "is_foreign"] if i % 17 == 0 else [],
            "customer_id": f"cus_{i % 5000:05d}",
            "amount_eur": 12.5 + i % 900,
            "fetched_at": now - timedelta(seconds=2),
            "scored_at": now - timedelta(seconds=1),
            "trace_id": uuid.uuid4().hex,
        }
        doc = to_document(prediction, "predictions.bench", i % 3, i, now)
        out.append(RawBSONDocument(bson.encode(doc)))
    return out


async def write_all(writer: MongoWriter, docs: list[RawBSONDocument], batch: int) -> float:
    started = time.perf_counter()
    for k in range(0, len(docs), batch):
        write = writer.batch(docs[k : k + batch])
        await write.attempt()
        assert not write.rejected and not write.to_insert and not write.to_replace
    return time.perf_counter() - started


async def measure(mode: str, n: int, batch: int) -> dict[str, Any]:
    settings = load_settings(
        mongo={"database": f"bench_sink_{uuid.uuid4().hex[:8]}"}, sink={"write_mode": mode}
    )
    writer = MongoWriter(settings.mongo, settings.sink)
    try:
        await writer.start()
        docs = documents(n)
        new_s = await write_all(writer, docs, batch)
        again_s = await write_all(writer, documents(n), batch)
        count = await writer.collection.count_documents({})
        assert count == n, count
        return {
            "mode": writer.mode,
            "server": writer.server,
            "documents": n,
            "batch": batch,
            "new_docs_per_s": round(n / new_s),
            "redelivered_docs_per_s": round(n / again_s),
            "documents_after_both": count,
        }
    finally:
        await writer.client.drop_database(settings.mongo.database)
        await writer.close()


async def main(n: int, batch: int) -> dict[str, Any]:
    runs = [await measure(mode, n, batch) for mode in ("insert-first", "upsert")]
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "runs": runs,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    result = asyncio.run(main(args.docs, args.batch))
    for run in result["runs"]:
        print(
            f"{run['server']:22} {run['mode']:13} new {run['new_docs_per_s']:>6} docs/s   "
            f"re-delivered {run['redelivered_docs_per_s']:>6} docs/s   "
            f"({run['documents']} docs, batch {run['batch']})"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
