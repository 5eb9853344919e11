"""Per-record stamps of a benchmarked process, taken through the project's own metrics.

Every process under test (streamscore's poller, processor and sink, and each peer) already
updates ``streamscore.metrics`` objects at the moments the benchmark cares about: the sink
observes ``END_TO_END`` (fetched_at → MongoDB acknowledgement) for every stored record, the
score agent observes ``PROCESSOR_STAGE_LATENCY`` (fetched_at → scored), the poller counts
``POLLER_PRODUCED``. :func:`install` wraps those metric objects in the module (before the
component is imported) with taps that forward every call unchanged and also record it here, so
the benchmark sees exact values without editing the components.

A background thread writes, every ``interval_s``: each series as appended float64 pairs
``(unix time of the observation, value)`` to ``<dir>/<role>.<series>.f64``, and the counters to
``<dir>/<role>.counters.json`` (atomic rename). Readers use :func:`read_series` and
:func:`read_counters`.
"""

from __future__ import annotations

import json
import os
import threading
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: metric attribute in ``streamscore.metrics`` → series/counter name template (labels format it).
SERIES = {
    "END_TO_END": "e2e",
    "PROCESSOR_STAGE_LATENCY": "stage.{agent}",
}
COUNTERS = {
    "POLLER_FETCHED": "fetched",
    "POLLER_PRODUCED": "produced",
    "PROCESSOR_IN": "in.{agent}",
    "PROCESSOR_OUT": "out.{agent}",
    "SINK_WRITTEN": "written",
    "DLQ_RECORDS": "dlq.{stage}",
}


class Recorder:
    """Collects counters and timestamped observations; flushes them to files from a thread."""

    def __init__(self, directory: Path, role: str, interval_s: float = 0.5) -> None:
        self.directory = directory
        self.role = role
        self.interval_s = interval_s
        self.counters: dict[str, float] = {}
        self._pending: dict[str, array[float]] = {}
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._loop, name="bench-stamps", daemon=True)
        self._thread.start()

    def count(self, name: str, amount: float = 1.0) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0.0) + amount

    def observe(self, name: str, value: float, at: float | None = None) -> None:
        with self._lock:
            buf = self._pending.get(name)
            if buf is None:
                buf = self._pending[name] = array("d")
            buf.append(time.time() if at is None else at)
            buf.append(value)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            counters = dict(self.counters)
        for name, buf in pending.items():
            with open(self.directory / f"{self.role}.{name}.f64", "ab") as f:
                buf.tofile(f)
        tmp = self.directory / f".{self.role}.counters.json.tmp"
        tmp.write_text(json.dumps(counters))
        os.replace(tmp, self.directory / f"{self.role}.counters.json")

    def _loop(self) -> None:
        while True:
            time.sleep(self.interval_s)
            self.flush()


class _ChildTap:
    """A labelled metric child that also tells the recorder."""

    def __init__(self, child: Any, record: Callable[[float], None]) -> None:
        self._child = child
        self._record = record

    def observe(self, value: float, *args: Any, **kwargs: Any) -> None:
        self._child.observe(value, *args, **kwargs)
        self._record(value)

    def inc(self, amount: float = 1, *args: Any, **kwargs: Any) -> None:
        self._child.inc(amount, *args, **kwargs)
        self._record(amount)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._child, name)


class MetricTap:
    """Stands in for a metric of ``streamscore.metrics``; ``labels()`` returns tapped children."""

    def __init__(self, metric: Any, template: str, record: Callable[[str, float], None]) -> None:
        self._metric = metric
        self._template = template
        self._record = record

    def labels(self, *args: Any, **kwargs: Any) -> _ChildTap:
        name = self._template.format(**kwargs)
        return _ChildTap(self._metric.labels(*args, **kwargs), lambda v: self._record(name, v))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._metric, name)


RECORDER: Recorder | None = None
"""The process's recorder once :func:`install` ran (peers stamp "agent in" through it)."""


def install(directory: Path, role: str) -> Recorder:
    """Tap the benchmark's metrics in ``streamscore.metrics``; call before importing components."""
    global RECORDER
    from streamscore import metrics

    recorder = RECORDER = Recorder(directory, role)
    for attr, template in SERIES.items():
        setattr(metrics, attr, MetricTap(getattr(metrics, attr), template, recorder.observe))
    for attr, template in COUNTERS.items():
        setattr(metrics, attr, MetricTap(getattr(metrics, attr), template, recorder.count))
    return recorder


def read_series(directory: Path, name: str) -> np.ndarray:
    """All ``(time, value)`` rows of series ``name`` from every role, sorted by time."""
    parts = [np.fromfile(p, dtype=np.float64) for p in sorted(directory.glob(f"*.{name}.f64"))]
    rows = [p[: len(p) - len(p) % 2].reshape(-1, 2) for p in parts if len(p) >= 2]
    if not rows:
        return np.empty((0, 2))
    out = np.concatenate(rows)
    return out[np.argsort(out[:, 0], kind="stable")]


def read_counters(directory: Path) -> dict[str, float]:
    """The counters of every role, summed by name."""
    total: dict[str, float] = {}
    for path in directory.glob("*.counters.json"):
        try:
            values = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for name, value in values.items():
            total[name] = total.get(name, 0.0) + float(value)
    return total
