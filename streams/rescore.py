"""``streamscore rescore``: run a window of ``clean.<source>`` through another model version.

The window is by Kafka record timestamp of the clean records (``--from`` inclusive, ``--to``
exclusive, see ``streamscore.analyst.reader``). Each clean record gets one prediction stamped with
the model's name, version and variant: ``candidate`` into ``predictions.<source>``, ``shadow``
into ``predictions-shadow.<source>`` (Kafka timestamp: now). The sink's ``_id`` includes the model
version, so the versions coexist in MongoDB.

The baseline is the predictions of the same record ids by the primary version (or ``against``)
found in ``predictions.<source>`` from ``--from`` to the high-water marks taken at start (reading
stops early once every record has one; the first found is used). Scoring uses the processor's
runtime (``streams.scoring``); records that fail to decode or score are counted, not dead-lettered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from itertools import islice
from typing import Any

import structlog
from confluent_kafka import Consumer

from streams.features import feature_matrix, feature_row
from streams.model_store import CARD, model_dir
from streams.rescore_compare import Comparison, Scored, compare
from streams.scoring import CANDIDATE, SHADOW, Outcome, Scorer, prediction_value
from streamscore.analyst.inputs import BadInput, Bound, check_window, parse_model_ref
from streamscore.analyst.progress import progress_bar
from streamscore.analyst.reader import PartitionRange, in_window, open_reader, plan, read, topic_partitions
from streamscore.avro import AvroCodec
from streamscore.bootstrap import codec
from streamscore.errors import DataError
from streamscore.kafka_config import producer_config
from streamscore.producer import AsyncProducer
from streamscore.registry import SchemaRegistry
from streamscore.settings import Settings
from streamscore.topics import clean_topic, predictions_topic, shadow_topic

log = structlog.get_logger(__name__)
CHUNK = 1000


class Into(StrEnum):
    predictions = "predictions"
    shadow = "shadow"


@dataclass(frozen=True)
class RescoreRequest:
    model: str
    start: datetime
    end: datetime | None = None
    into: Into = Into.shadow
    source: str | None = None
    against: str | None = None


@dataclass
class RescoreResult:
    source: str
    topic: str
    variant: str
    records: int = 0
    produced: int = 0
    failed: int = 0
    comparison: Comparison | None = None
    new: dict[str, Scored] = field(default_factory=dict)


def known_models(settings: Settings) -> list[str]:
    root = settings.processor.models_dir
    return sorted(f"{card.parent.parent.name}:{card.parent.name}" for card in root.glob(f"*/*/{CARD}"))


def load_scorer(settings: Settings, ref: str) -> Scorer:
    """The model ``NAME:VERSION``; BadInput when there is no such version."""
    parse_model_ref(ref)
    proc = settings.processor
    if not (model_dir(proc.models_dir, ref) / CARD).is_file():
        known = ", ".join(known_models(settings)) or "none"
        raise BadInput(f"unknown model version {ref} in {proc.models_dir} (known: {known})")
    return Scorer.load(proc.models_dir, ref, "--model", proc)


def pick_source(settings: Settings, source: str | None) -> str:
    names = [s.name for s in settings.sources]
    if source is None and len(names) == 1:
        return names[0]
    if source in names:
        return source
    raise BadInput(f"--source must be one of {', '.join(names)}" if source else "--source is required")


def _chunks(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, n)):
        yield chunk


@dataclass
class _Job:
    """One rescore run: plan the ranges, score and produce, then find the baseline."""

    settings: Settings
    scorer: Scorer
    baseline: str
    consumer: Consumer
    registry: SchemaRegistry
    result: RescoreResult
    window: tuple[Bound, Bound | None]
    clean_ranges: list[PartitionRange] = field(default_factory=list)
    base_ranges: list[PartitionRange] = field(default_factory=list)

    def plan(self) -> None:
        """Validate the topics and fix every range (high-water marks) before anything is written."""
        src = self.result.source
        self.clean_ranges = plan(
            self.consumer, clean_topic(src), topic_partitions(self.consumer, clean_topic(src)), *self.window
        )
        base_parts = topic_partitions(self.consumer, predictions_topic(src))
        self.base_ranges = plan(self.consumer, predictions_topic(src), base_parts, self.window[0], None)
        topic_partitions(self.consumer, self.result.topic)

    def _score(self, txns: list[dict[str, Any]]) -> list[Outcome | Exception]:
        features = feature_matrix([feature_row(t) for t in txns])
        try:
            scores = [float(s) for s in self.scorer.predict(features).tolist()]
        except Exception as exc:  # a model that cannot run on this chunk: count every record
            log.warning("rescore_chunk_failed", error=str(exc), records=len(txns))
            return [exc] * len(txns)
        return list(self.scorer.outcomes(scores, features))

    async def rescore(self, show_progress: bool) -> None:
        src, res = self.result.source, self.result
        clean_codec = codec(self.registry, self.settings, clean_topic(src))
        out_codec = codec(self.registry, self.settings, res.topic)
        producer = AsyncProducer(producer_config(self.settings, "rescore"))
        try:
            with progress_bar(show_progress) as bar:
                task = bar.add_task(
                    clean_topic(src), total=sum(r.size for r in self.clean_ranges) or 1, records=0
                )
                messages = read(
                    self.consumer, clean_topic(src), self.clean_ranges, lambda n: bar.advance(task, n)
                )
                window = (m for m in messages if in_window(m, *self.window))
                for chunk in _chunks(window, CHUNK):
                    txns = []
                    for msg in chunk:
                        try:
                            txns.append(clean_codec.decode(msg.value()))
                        except DataError as exc:
                            res.failed += 1
                            log.warning(
                                "rescore_undecodable",
                                partition=msg.partition(),
                                offset=msg.offset(),
                                error=str(exc),
                            )
                    res.records += len(chunk)
                    await self._produce(producer, out_codec, txns)
                    bar.update(task, records=res.produced)
                bar.update(task, completed=bar.tasks[0].total)
        finally:
            producer.close()

    async def _produce(
        self, producer: AsyncProducer, out_codec: AvroCodec, txns: list[dict[str, Any]]
    ) -> None:
        res = self.result
        if not txns:
            return
        batch = producer.batch()
        scored_at = datetime.now(UTC)
        for txn, outcome in zip(txns, self._score(txns), strict=True):
            try:
                if isinstance(outcome, Exception):
                    raise outcome
                value = prediction_value(txn, self.scorer, res.variant, outcome, scored_at)
                producer.produce(batch, res.topic, out_codec.encode(value), key=txn["transaction_id"])
            except (ValueError, DataError) as exc:
                res.failed += 1
                log.warning("rescore_failed", record_id=txn["transaction_id"], error=str(exc))
                continue
            res.new[txn["transaction_id"]] = Scored.of(value)
        res.produced += await batch.wait()

    def read_baseline(self) -> dict[str, Scored]:
        """Predictions of the baseline version for the rescored record ids."""
        topic = predictions_topic(self.result.source)
        pred_codec = codec(self.registry, self.settings, topic)
        wanted = set(self.result.new)
        found: dict[str, Scored] = {}
        for msg in read(self.consumer, topic, self.base_ranges):
            key = msg.key()
            if key is not None and key.decode(errors="replace") not in wanted:
                continue
            try:
                p = pred_codec.decode(msg.value())
            except DataError:
                continue
            rid = p["record_id"]
            if (
                rid in wanted
                and rid not in found
                and f"{p['model_name']}:{p['model_version']}" == self.baseline
            ):
                found[rid] = Scored.of(p)
                if len(found) == len(wanted):
                    break
        return found


def rescore(settings: Settings, req: RescoreRequest, show_progress: bool = True) -> RescoreResult:
    """Run one rescore; BadInput (nothing written) for a bad window, source, topic or model."""
    start = Bound("time", time=req.start)
    end = Bound("time", time=req.end) if req.end else None
    check_window(start, end)
    source = pick_source(settings, req.source)
    baseline = req.against or settings.processor.primary_model
    parse_model_ref(baseline)
    scorer = load_scorer(settings, req.model)
    topic, variant = (
        (predictions_topic(source), CANDIDATE)
        if req.into is Into.predictions
        else (shadow_topic(source), SHADOW)
    )
    result = RescoreResult(source, topic, variant)
    consumer = open_reader(settings, "rescore", **{"enable.partition.eof": True})
    registry = SchemaRegistry(settings.registry)
    job = _Job(settings, scorer, baseline, consumer, registry, result, (start, end))
    try:
        job.plan()
        asyncio.run(job.rescore(show_progress))
        base = job.read_baseline()
    finally:
        consumer.close()
        registry.close()
    result.comparison = compare(req.model, result.new, baseline, base)
    return result
