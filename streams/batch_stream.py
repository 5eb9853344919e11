"""Batches of Kafka messages for Faust agents, without Faust's per-message hand-over.

Faust hands every fetched message to an agent through the conductor, a channel queue, the
stream iterator and ``take_events``: the consumer's drain loop awaits ``wait_first(callback,
suspend_flow.wait())`` per message (two tasks and an ``asyncio.wait``), then an ``Event`` is
built, queued, taken and acked one by one. Profiled (py-spy), that path cost 0.25 ms of CPU per
record, more than the hand-written floor loop's whole work (docs/benchmarks.md).

Our agents only ever want lists of raw messages. So for the topics an agent reads through
:func:`batches`, the drain loop appends each message to that agent's :class:`Inbox` instead,
and the agent takes up to ``size`` messages at a time (waiting at most ``within`` seconds for
a batch to fill). Everything else stays Faust's: the agent and its supervision, group
membership and assignment, fetching (``Consumer.getmany``), offset-gap handling and commits of
acked offsets. A batch is acked (``Consumer.ack`` per message) only when the agent asks for
the next one, i.e. after the loop body returned; a body that raises acks nothing.

Rebalances: messages of revoked partitions are dropped from the inbox (Faust seeks back to the
committed offsets and fetches them again), messages of an older consumer generation are never
handed out, and no batch is taken while Faust's flow control is suspended. Back-pressure: a
partition whose inbox holds more than ``stream_buffer_maxsize`` messages is taken out of the
fetch (``Consumer.on_buffer_full``) until the inbox drained to half.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Any

import faust
from faust.transport.consumer import Consumer
from faust.types import TP, AppT, Message

INBOXES = "_streamscore_inboxes"


class Inbox:
    """Fetched messages of some topics, waiting for one agent."""

    def __init__(self, app: AppT, size: int, within: float, maxsize: int) -> None:
        self.app = app
        self.size = size
        self.within = within
        self.maxsize = max(maxsize, size)
        self._messages: deque[Message] = deque()
        self._any = asyncio.Event()
        self._full = asyncio.Event()
        self._paused: set[TP] = set()

    def __len__(self) -> int:
        return len(self._messages)

    def put(self, message: Message) -> None:
        """Called by the consumer's drain loop for every fetched message of our topics."""
        messages = self._messages
        messages.append(message)
        n = len(messages)
        if n == 1:
            self._any.set()
        if n >= self.size:
            self._full.set()
            if n > self.maxsize:
                tp = TP(message.topic, message.partition)  # message.tp may be aiokafka's type
                if tp not in self._paused:
                    self._paused.add(tp)
                    self.app.consumer.on_buffer_full(tp)

    async def take(self) -> list[Message]:
        """The next batch: up to ``size`` messages, once full or ``within`` s after the first."""
        app = self.app
        while True:
            await app.flow_control.acquire()
            await self._any.wait()
            if not self._full.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.within)
            batch = self._pop()
            if batch:
                return batch

    def _pop(self) -> list[Message]:
        messages = self._messages
        generation = self.app.consumer_generation_id
        active = self.app.flow_control.is_active()
        batch: list[Message] = []
        while messages and len(batch) < self.size:
            message = messages.popleft()
            if active and message.generation_id == generation:
                batch.append(message)
        self._settle()
        return batch

    def drop(self, tps: Iterable[TP]) -> int:
        """Forget the messages of ``tps`` (revoked): Faust fetches them again after the rebalance."""
        gone = {(tp.topic, tp.partition) for tp in tps}
        kept = [m for m in self._messages if (m.topic, m.partition) not in gone]
        dropped = len(self._messages) - len(kept)
        self._messages = deque(kept)
        self._settle()
        return dropped

    def _settle(self) -> None:
        n = len(self._messages)
        if not n:
            self._any.clear()
        if n < self.size:
            self._full.clear()
        if self._paused and n <= self.maxsize // 2:
            for tp in self._paused:
                self.app.consumer.on_buffer_drop(tp)
            self._paused.clear()

    def track(self, batch: list[Message]) -> None:
        """What Faust's stream does as it hands a message out: pending ack until acked."""
        unacked = self.app.consumer._unacked_messages  # type: ignore[attr-defined]
        for message in batch:
            message.tracked = True
            unacked.add(message)

    def ack(self, batch: list[Message]) -> None:
        """Ack the batch's messages (a withheld message is already marked acked: skipped)."""
        ack = self.app.consumer.ack
        for message in batch:
            ack(message)


def withhold(messages: Iterable[Message]) -> None:
    """Mark messages acked without telling the consumer, so their offsets are never committed.

    The batch iterator's ack then skips them, ``wait_empty`` at stop no longer waits for them,
    and the commit stops below the first withheld offset: the batch is read again after a
    restart. A running worker never re-reads them, so a withheld batch must end in a stop or a
    crash (the processor and the sink make sure of it).
    """
    for message in messages:
        message.acked = True


def inboxes(app: AppT) -> dict[str, Inbox]:
    """topic -> Inbox of ``app`` (created on first use, with the rebalance hook)."""
    table: dict[str, Inbox] | None = getattr(app, INBOXES, None)
    if table is None:
        table = {}
        setattr(app, INBOXES, table)

        @app.on_partitions_revoked.connect  # type: ignore[misc, arg-type]
        async def _drop_revoked(sender: Any, revoked: set[TP], **_: Any) -> None:
            for inbox in set(getattr(sender, INBOXES, {}).values()):
                inbox.drop(revoked)

    return table


async def batches(stream: faust.StreamT, size: int, within: float) -> AsyncIterator[list[Message]]:
    """Lists of raw messages of the agent's topics, in place of ``stream.take_events``.

    A batch is acked when the next one is asked for; if the loop body raises, it is not acked.
    """
    app = stream.app
    channel = stream.channel
    maxsize = int(app.conf.stream_buffer_maxsize)
    inbox = Inbox(app, size, within, maxsize)
    table = inboxes(app)
    for topic in channel.topics:  # type: ignore[attr-defined]
        table[topic] = inbox
    channel.__aiter__()  # subscribes the topics, as iterating the stream would
    try:
        while True:
            batch = await inbox.take()
            inbox.track(batch)
            yield batch
            inbox.ack(batch)
    finally:
        for topic in channel.topics:  # type: ignore[attr-defined]
            if table.get(topic) is inbox:
                del table[topic]


def _drain_into_inboxes() -> None:
    """Make the consumer's drain loop put messages of inbox topics into their inbox.

    A replacement of ``Consumer._drain_messages`` with the same bookkeeping (read offsets, offset
    gaps, commit every ``broker_commit_every`` acks, a yield to the loop every 100 messages);
    topics without an inbox still go through ``wait_first(callback, suspend_flow)`` as before.
    """
    if getattr(Consumer._drain_messages, "_streamscore_inboxes", False):
        return
    from faust.transport.consumer import CONSUMER_FETCHING

    async def _drain_messages(self: Any, fetcher: Any) -> None:
        table: dict[str, Inbox] = getattr(self.app, INBOXES, {})
        callback = self.callback
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        commit_every = self._commit_every
        stopping = self._stopped.is_set
        fetcher_stopping = fetcher._stopped.is_set
        since_yield = 0
        try:
            while not (stopping() or fetcher_stopping()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records = self.getmany(timeout=1.0)
                await asyncio.sleep(0)  # getmany may not yield at all
                if self.should_stop:
                    continue
                async for tp, message in records:
                    since_yield += 1
                    if since_yield > 100:
                        since_yield = 0
                        await asyncio.sleep(0)
                    offset = message.offset
                    last = read_offset[tp]
                    if last is not None and offset < last:
                        continue  # read already (a fetch that overlaps a seek)
                    if last and offset - last > 1 and acks_enabled_for(message.topic):
                        await self._add_gap(tp, last + 1, offset)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    inbox = table.get(message.topic)
                    if inbox is not None:
                        inbox.put(message)
                    else:
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                    read_offset[tp] = offset
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    _drain_messages._streamscore_inboxes = True  # type: ignore[attr-defined]
    Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]


_drain_into_inboxes()
