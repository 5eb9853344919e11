"""The Inbox between Faust's drain loop and a batch agent: sizes, timing, rebalances, pressure.

Pure logic against a stand-in app (consumer pause/resume calls recorded, Faust's real
FlowControlEvent); the real consumer path is covered by the processor and sink integration and
fault tests.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types.tuples import TP, ConsumerMessage
from mode.utils.queues import FlowControlEvent

from streams.batch_stream import Inbox


class Calls(SimpleNamespace):
    full: list[TP]
    drop: list[TP]


def app(generation: int = 1) -> Any:
    calls = Calls(full=[], drop=[])
    consumer = SimpleNamespace(on_buffer_full=calls.full.append, on_buffer_drop=calls.drop.append)
    flow = FlowControlEvent(initially_suspended=False)
    return SimpleNamespace(
        consumer=consumer, flow_control=flow, consumer_generation_id=generation, calls=calls
    )


def msg(offset: int, partition: int = 0, generation: int = 1, topic: str = "raw.demo") -> ConsumerMessage:
    m = ConsumerMessage(topic, partition, offset, 0, 0, [], b"k", b"v", None, 1, 1, TP(topic, partition))
    m.generation_id = generation
    return m


async def test_a_full_batch_is_handed_out_at_once_and_the_rest_waits_for_the_next() -> None:
    inbox = Inbox(app(), size=3, within=10.0, maxsize=100)
    for o in range(5):
        inbox.put(msg(o))
    started = time.monotonic()
    first = await inbox.take()
    assert [m.offset for m in first] == [0, 1, 2]
    assert time.monotonic() - started < 1.0  # did not wait out `within`
    inbox.put(msg(5))
    assert [m.offset for m in await inbox.take()] == [3, 4, 5]
    assert len(inbox) == 0


async def test_a_partial_batch_waits_within_then_goes() -> None:
    inbox = Inbox(app(), size=100, within=0.2, maxsize=1000)
    inbox.put(msg(0))
    started = time.monotonic()
    batch = await inbox.take()
    waited = time.monotonic() - started
    assert [m.offset for m in batch] == [0]
    assert 0.15 < waited < 2.0


async def test_take_waits_for_the_first_message() -> None:
    inbox = Inbox(app(), size=2, within=0.05, maxsize=10)
    task = asyncio.ensure_future(inbox.take())
    await asyncio.sleep(0.1)
    assert not task.done()
    inbox.put(msg(7))
    inbox.put(msg(8))
    assert [m.offset for m in await asyncio.wait_for(task, 2)] == [7, 8]


async def test_messages_of_an_older_generation_are_never_handed_out() -> None:
    a = app(generation=2)
    inbox = Inbox(a, size=10, within=0.05, maxsize=100)
    inbox.put(msg(0, generation=1))
    inbox.put(msg(1, generation=2))
    assert [m.offset for m in await inbox.take()] == [1]


async def test_revoked_partitions_are_dropped_and_the_others_kept() -> None:
    inbox = Inbox(app(), size=10, within=0.05, maxsize=100)
    for o, p in [(0, 0), (0, 1), (1, 0), (1, 1)]:
        inbox.put(msg(o, partition=p))
    assert inbox.drop([TP("raw.demo", 1)]) == 2
    assert [(m.partition, m.offset) for m in await inbox.take()] == [(0, 0), (0, 1)]


async def test_no_batch_is_taken_while_flow_is_suspended() -> None:
    a = app()
    inbox = Inbox(a, size=1, within=0.05, maxsize=10)
    a.flow_control.suspend()
    inbox.put(msg(0))
    task = asyncio.ensure_future(inbox.take())
    await asyncio.sleep(0.1)
    assert not task.done()
    a.flow_control.resume()
    assert [m.offset for m in await asyncio.wait_for(task, 2)] == [0]


async def test_a_partition_is_paused_over_maxsize_and_resumed_at_half() -> None:
    a = app()
    inbox = Inbox(a, size=2, within=0.05, maxsize=4)
    for o in range(6):
        inbox.put(msg(o))
    assert a.calls.full == [TP("raw.demo", 0)]  # once, although two puts went over
    await inbox.take()  # 4 left: above half
    assert a.calls.drop == []
    await inbox.take()  # 2 left: resumed
    assert a.calls.drop == [TP("raw.demo", 0)]


def test_ack_skips_withheld_messages_and_track_marks_pending() -> None:
    acked: list[int] = []
    a = app()
    a.consumer.ack = lambda m: acked.append(m.offset) if not m.acked else None
    a.consumer._unacked_messages = set()
    inbox = Inbox(a, size=2, within=0.05, maxsize=4)
    batch = [msg(0), msg(1)]
    inbox.track(batch)
    assert a.consumer._unacked_messages == set(batch) and all(m.tracked for m in batch)
    batch[0].acked = True  # withheld
    inbox.ack(batch)
    assert acked == [1]


@pytest.mark.parametrize("size", [1, 5])
async def test_batches_never_exceed_size(size: int) -> None:
    inbox = Inbox(app(), size=size, within=0.01, maxsize=100)
    for o in range(12):
        inbox.put(msg(o))
    seen: list[int] = []
    while len(seen) < 12:
        batch = await inbox.take()
        assert 1 <= len(batch) <= size
        seen += [m.offset for m in batch]
    assert seen == list(range(12))
