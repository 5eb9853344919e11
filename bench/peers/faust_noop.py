"""Faust's own cost: an agent with the processor's batch pattern that does nothing with the records.

Batches of 500 (within 0.05 s) from :func:`streams.batch_stream.batches`, as the processor takes
them, or with ``--faust-stream`` from Faust's own ``stream.take_events`` (its per-message stream
path); counts until ``n`` records arrived, prints records/s and CPU ms per record (process CPU,
all threads) from the first batch to the last as one JSON line, then exits.
Run: ``python bench/peers/faust_noop.py <topic> <n> <app id> [--faust-stream]``.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

from streams.batch_stream import batches
from streams.faust_runtime import run_worker
from streamscore.kafka_config import faust_app_config
from streamscore.settings import load_settings


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    import faust

    topic, n, app_id = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    faust_path = "--faust-stream" in sys.argv[4:]
    conf = faust_app_config(load_settings(), app_id) | {
        "stream_buffer_maxsize": 4000,
        "broker_max_poll_records": 500,
    }
    app = faust.App(**conf)
    channel = app.topic(topic, key_serializer="raw", value_serializer="raw")
    state: dict[str, float] = {"n": 0}

    @app.agent(channel, concurrency=1)
    async def noop(stream: faust.StreamT) -> None:
        source = stream.take_events(500, within=0.05) if faust_path else batches(stream, 500, 0.05)  # type: ignore[attr-defined]
        async for events in source:
            if not state["n"]:
                state.update(t0=time.monotonic(), c0=cpu_s(), n0=len(events))
            state["n"] += len(events)
            if state["n"] >= n:
                records = state["n"] - state["n0"]
                span = time.monotonic() - state["t0"]
                out = {
                    "records": int(state["n"]),
                    "measured_records": int(records),
                    "measured_s": round(span, 3),
                    "records_per_s": round(records / span, 1),
                    "cpu_ms_per_record": round(1000 * (cpu_s() - state["c0"]) / records, 4),
                }
                print(json.dumps(out), flush=True)
                os._exit(0)

    run_worker(app, loglevel="WARNING")


if __name__ == "__main__":
    main()
