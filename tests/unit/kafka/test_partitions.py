"""A lane's committable offset waits for the confirmations its handler deferred
(``auditrelay.kafka.partitions.Lane.confirm_after``), in order, and a lane with too many
unconfirmed records waits. Real asyncio futures; no broker, no timers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import TopicPartition

from auditrelay.kafka.partitions import Lane

TP = TopicPartition("test.dest.dst_1", 0)


@dataclass
class Record:
    offset: int


class Confirming:
    """A handler that defers one future per record, which the test resolves."""

    def __init__(self) -> None:
        self.futures: dict[int, asyncio.Future[None]] = {}
        self.handled: list[int] = []
        self.changed = asyncio.Event()

    async def __call__(self, record: Any, lane: Lane) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.futures[record.offset] = future
        lane.confirm_after(future)
        self.handled.append(record.offset)
        self.changed.set()


async def until(predicate: Callable[[], bool]) -> None:
    """Let the lane's task run until ``predicate`` holds (event-loop turns, no clock)."""
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


async def turns(count: int = 50) -> None:
    """Let every ready task run a while (event-loop turns, no clock)."""
    for _ in range(count):
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_the_offset_moves_only_over_confirmed_records_in_order() -> None:
    handler = Confirming()
    lane = Lane(TP, handler, name="test")
    try:
        lane.feed([Record(0), Record(1), Record(2)])
        await until(lambda: handler.handled == [0, 1, 2])
        assert lane.done is None
        assert lane.unconfirmed == 3
        handler.futures[1].set_result(None)  # the second first: nothing committable yet
        await turns()
        assert lane.done is None
        handler.futures[0].set_result(None)
        await until(lambda: lane.done == 2)
        handler.futures[2].set_result(None)
        await until(lambda: lane.done == 3)
        assert await lane.settle(1.0)
    finally:
        await lane.close()


@pytest.mark.asyncio
async def test_a_failed_confirmation_stops_the_offset_before_its_record() -> None:
    handler = Confirming()
    lane = Lane(TP, handler, name="test")
    try:
        lane.feed([Record(5), Record(6)])
        await until(lambda: handler.handled == [5, 6])
        handler.futures[5].set_result(None)
        handler.futures[6].set_exception(RuntimeError("not confirmed"))
        await until(lambda: lane.done == 6)
        lane.feed([Record(7)])
        await until(lambda: 7 in handler.futures)
        handler.futures[7].set_result(None)
        await turns()
        assert lane.done == 6  # never past the record whose confirmation failed
    finally:
        await lane.close()


@pytest.mark.asyncio
async def test_records_without_deferred_confirmations_are_done_at_once() -> None:
    handled: list[int] = []

    async def plain(record: Any, _lane: Lane) -> None:
        handled.append(record.offset)

    lane = Lane(TP, plain, name="test")
    try:
        lane.feed([Record(0), Record(1)])
        await until(lambda: lane.done == 2)
        assert handled == [0, 1]
        assert lane.unconfirmed == 0
    finally:
        await lane.close()


@pytest.mark.asyncio
async def test_too_many_unconfirmed_records_hold_the_lane() -> None:
    handler = Confirming()
    lane = Lane(TP, handler, name="test", max_unconfirmed=2)
    try:
        lane.feed([Record(0), Record(1), Record(2)])
        await until(lambda: handler.handled == [0, 1] and lane.wants_pause(100))
        assert 2 not in handler.futures  # waits for the oldest confirmation
        handler.futures[0].set_result(None)
        await until(lambda: handler.handled == [0, 1, 2])
        assert lane.done == 1
    finally:
        await lane.close()


@pytest.mark.asyncio
async def test_close_waits_for_pending_confirmations() -> None:
    handler = Confirming()
    lane = Lane(TP, handler, name="test")
    lane.feed([Record(0)])
    await until(lambda: handler.handled == [0])
    closing = asyncio.create_task(lane.close(settle_seconds=30))
    await turns()
    assert not closing.done()
    handler.futures[0].set_result(None)
    await closing
    assert lane.done == 1


@pytest.mark.asyncio
async def test_a_drained_or_released_lane_asks_to_be_resumed_at_once() -> None:
    ready: list[int] = []
    gate = asyncio.Event()

    async def gated(record: Any, lane: Lane) -> None:
        if record.offset == 0:
            with lane.holding():
                await gate.wait()

    lane = Lane(TP, gated, name="test", queue_limit=3, on_ready=lambda: ready.append(1))
    try:
        lane.feed([Record(0), Record(1), Record(2), Record(3), Record(4)])
        await until(lambda: lane.wants_pause())
        assert ready == []
        gate.set()  # released, but 4 records still queued: still wants its pause
        await until(lambda: lane.done == 5)
        assert ready == [1]  # once, when the queue fell below the limit
        assert not lane.wants_pause()
    finally:
        await lane.close()
