"""An asyncio face on the confluent-kafka producer that never awaits a single message.

Records are produced into a :class:`DeliveryBatch`; one background thread serves delivery
callbacks; ``await batch.wait()`` returns once Kafka acknowledged every record of the batch (or
raises). One wake-up of the event loop per batch, not per message.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from streamscore.errors import StreamscoreError, TransientError

Headers = Sequence[tuple[str, bytes]] | None


class DeliveryFailed(TransientError):
    """Kafka did not acknowledge at least one record of a batch."""

    def __init__(self, errors: list[KafkaError]) -> None:
        first = errors[0]
        super().__init__(f"{len(errors)} record(s) not delivered; first: {first.str()}")
        self.errors = errors
        self.retriable = all(e.retriable() or not e.fatal() for e in errors)


class DeliveryBatch:
    """Counts outstanding deliveries; resolves one future when all are acknowledged."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._pending = 0
        self._sealed = False
        self._done: asyncio.Future[None] = loop.create_future()
        self.errors: list[KafkaError] = []
        self.count = 0

    def _add(self) -> None:
        with self._lock:
            self._pending += 1
            self.count += 1

    def on_delivery(self, err: KafkaError | None, _msg: Message | None) -> None:
        with self._lock:
            if err is not None:
                self.errors.append(err)
            self._pending -= 1
            finished = self._sealed and self._pending == 0
        if finished:
            self._loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    async def wait(self) -> int:
        """Wait for every acknowledgement; raise DeliveryFailed if any record failed."""
        with self._lock:
            self._sealed = True
            finished = self._pending == 0
        if finished:
            self._finish()
        await self._done
        if self.errors:
            raise DeliveryFailed(self.errors)
        return self.count


class AsyncProducer:
    """Wraps one confluent-kafka Producer; thread-safe produce, batched acknowledgement."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.raw = Producer(config)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kafka-delivery", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.raw.poll(0.05)

    def batch(self) -> DeliveryBatch:
        return DeliveryBatch(asyncio.get_running_loop())

    def produce(
        self,
        batch: DeliveryBatch,
        topic: str,
        value: bytes | None,
        key: bytes | str | None = None,
        headers: Headers = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Queue one record; blocks briefly only when librdkafka's queue is full."""
        kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": batch.on_delivery}
        if headers:
            kwargs["headers"] = list(headers)
        if partition is not None:
            kwargs["partition"] = partition
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        batch._add()
        while True:
            try:
                self.raw.produce(topic, **kwargs)
                return
            except BufferError:
                self.raw.poll(0.05)
            except KafkaException as exc:
                batch.on_delivery(exc.args[0] if exc.args else None, None)
                raise StreamscoreError(f"cannot produce to {topic}: {exc}") from exc

    async def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for everything queued; return how many records are still undelivered."""
        return await asyncio.to_thread(self.raw.flush, timeout_s)

    def close(self, timeout_s: float = 30.0) -> int:
        remaining = self.raw.flush(timeout_s)
        self._stop.set()
        self._thread.join(timeout=2)
        return int(remaining)
