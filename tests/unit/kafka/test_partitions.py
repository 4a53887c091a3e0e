"""A lane's committable offset waits for the confirmations its handler deferred
(``auditrelay.kafka.partitions.Lane.confirm_after``), in order, and a lane with too many
unconfirmed records waits; a ``PartitionRunner``'s lanes through rebalances, over a
fake consumer. Real asyncio futures; no broker, no timers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, cast

import pytest
from aiokafka import TopicPartition

from auditrelay.kafka import partitions
from auditrelay.kafka.partitions import Lane, PartitionRunner
from tests.support.polling import within_turns

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
        await within_turns(lambda: handler.handled == [0, 1, 2])
        assert lane.done is None
        assert lane.unconfirmed == 3
        handler.futures[1].set_result(None)  # the second first: nothing committable yet
        await turns()
        assert lane.done is None
        handler.futures[0].set_result(None)
        await within_turns(lambda: lane.done == 2)
        handler.futures[2].set_result(None)
        await within_turns(lambda: lane.done == 3)
        assert await lane.settle(1.0)
    finally:
        await lane.close()


@pytest.mark.asyncio
async def test_a_failed_confirmation_stops_the_offset_before_its_record() -> None:
    handler = Confirming()
    lane = Lane(TP, handler, name="test")
    try:
        lane.feed([Record(5), Record(6)])
        await within_turns(lambda: handler.handled == [5, 6])
        handler.futures[5].set_result(None)
        handler.futures[6].set_exception(RuntimeError("not confirmed"))
        await within_turns(lambda: lane.done == 6)
        lane.feed([Record(7)])
        await within_turns(lambda: 7 in handler.futures)
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
        await within_turns(lambda: lane.done == 2)
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
        await within_turns(lambda: handler.handled == [0, 1] and lane.wants_pause(100))
        assert 2 not in handler.futures  # waits for the oldest confirmation
        handler.futures[0].set_result(None)
        await within_turns(lambda: handler.handled == [0, 1, 2])
        assert lane.done == 1
    finally:
        await lane.close()


@pytest.mark.asyncio
async def test_close_waits_for_pending_confirmations() -> None:
    handler = Confirming()
    lane = Lane(TP, handler, name="test")
    lane.feed([Record(0)])
    await within_turns(lambda: handler.handled == [0])
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
        await within_turns(lambda: lane.wants_pause())
        assert ready == []
        gate.set()  # released, but 4 records still queued: still wants its pause
        await within_turns(lambda: lane.done == 5)
        assert ready == [1]  # once, when the queue fell below the limit
        assert not lane.wants_pause()
    finally:
        await lane.close()


# -- PartitionRunner through rebalances ------------------------------------------------------
#
# What the runner promises (auditrelay/kafka/partitions.py): on a revocation it waits, at
# most SETTLE_SECONDS, for the confirmations of what its lanes already handled, and
# commits each lane up to its last handled and confirmed record; it does not wait for a
# record still in its handler, and keeps every lane until the assignment that follows.
# There, a lane whose partition came back goes on where it was (the consumer seeks past
# what the lane holds, so nothing is handled twice); a lane whose partition went
# elsewhere is stopped, its record in flight cancelled and left uncommitted, so the
# partition's next owner starts at the committed offset and handles that record again.

TOPIC = "test.dest.dst_runner"


def tp(partition: int) -> TopicPartition:
    return TopicPartition(TOPIC, partition)


@dataclass(frozen=True)
class Message:
    """What the runner reads of an aiokafka ``ConsumerRecord``."""

    topic: str
    partition: int
    offset: int


class FakeGroup:
    """The broker's side of one consumer group: each partition's log, committed offsets."""

    def __init__(self, partitions: int) -> None:
        self.logs: dict[TopicPartition, list[Message]] = {tp(p): [] for p in range(partitions)}
        self.committed: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, int]] = []
        self.consumers: list[FakeConsumer] = []

    def append(self, partition: int, count: int = 1) -> None:
        log = self.logs[tp(partition)]
        start = len(log)
        log.extend(Message(TOPIC, partition, start + n) for n in range(count))
        for consumer in self.consumers:
            consumer.wake()


class FakeConsumer:
    """The part of ``AIOKafkaConsumer`` a ``PartitionRunner`` uses, over a ``FakeGroup``.

    ``getmany`` returns what follows each fetch position of the assigned, unpaused
    partitions, and waits (no clock) while there is nothing; during a rebalance
    (``revoking`` until ``assign``) it fetches nothing, as aiokafka does not either.
    """

    def __init__(self, group: FakeGroup) -> None:
        self.group = group
        group.consumers.append(self)
        self._assigned: set[TopicPartition] = set()
        self._paused: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}
        self.seeks: list[tuple[TopicPartition, int]] = []
        self._rebalancing = False
        self._closed = False
        self._wakeup = asyncio.Event()

    def wake(self) -> None:
        self._wakeup.set()

    def close(self) -> None:
        self._closed = True
        self.wake()

    def revoking(self) -> None:
        self._rebalancing = True

    def assign(self, partitions: set[TopicPartition]) -> None:
        """The group's new assignment: fetching starts at the committed offsets."""
        self._assigned = set(partitions)
        self._paused.clear()
        self.positions = {p: self.group.committed.get(p, 0) for p in partitions}
        self._rebalancing = False

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def pause(self, *partitions: TopicPartition) -> None:
        self._paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self._paused.difference_update(partitions)
        self.wake()

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition, offset))
        self.positions[partition] = offset

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.group.commits.append(dict(offsets))
        self.group.committed.update(offsets)

    async def getmany(self, **_: Any) -> dict[TopicPartition, list[Message]]:
        while not self._closed:
            fetched = {} if self._rebalancing else {
                p: self.group.logs[p][self.positions[p]:]
                for p in self._assigned - self._paused
                if len(self.group.logs[p]) > self.positions[p]}
            if fetched:
                for p, records in fetched.items():
                    self.positions[p] = records[-1].offset + 1
                return fetched
            self._wakeup.clear()
            await self._wakeup.wait()
        return {}


class Scripted:
    """A handler recording each (partition, offset) it handles; the test may hold a
    record in the handler (``hold``) or defer its confirmation (``defer``)."""

    def __init__(self) -> None:
        self.started: list[tuple[int, int]] = []
        self.handled: list[tuple[int, int]] = []
        self.cancelled: list[tuple[int, int]] = []
        self.gates: dict[tuple[int, int], asyncio.Future[None]] = {}
        self.confirmations: dict[tuple[int, int], asyncio.Future[None]] = {}

    def hold(self, partition: int, offset: int) -> asyncio.Future[None]:
        gate = self.gates[partition, offset] = asyncio.get_running_loop().create_future()
        return gate

    def defer(self, partition: int, offset: int) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self.confirmations[partition, offset] = future
        return future

    def of(self, partition: int) -> list[int]:
        return [offset for p, offset in self.handled if p == partition]

    def release_all(self) -> None:
        for future in (*self.gates.values(), *self.confirmations.values()):
            if not future.done():
                future.set_result(None)

    async def __call__(self, record: Any, lane: Lane) -> None:
        key = (record.partition, record.offset)
        self.started.append(key)
        try:
            if key in self.gates:
                await self.gates[key]
        except asyncio.CancelledError:
            self.cancelled.append(key)
            raise
        if key in self.confirmations:
            lane.confirm_after(self.confirmations[key])
        self.handled.append(key)


class Member:
    """One group member: a ``PartitionRunner`` running over a ``FakeConsumer``.

    The test plays the group coordinator: ``revoke`` and ``assign`` call the runner's
    listener as aiokafka's eager rebalance does (every partition revoked first).
    """

    def __init__(self, group: FakeGroup, handler: Scripted | None = None) -> None:
        self.handler = handler or Scripted()
        self.consumer = FakeConsumer(group)
        # No periodic commits: every commit seen here is the rebalance's.
        self.runner = PartitionRunner(cast(Any, self.consumer), self.handler, name="test",
                                      commit_interval=3600.0)
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Member:
        self._task = asyncio.create_task(self.runner.run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.handler.release_all()
        self.runner.stop()
        self.consumer.close()
        assert self._task is not None
        await self._task
        await self.runner.close()

    async def revoke(self) -> None:
        self.consumer.revoking()
        await self.runner.on_partitions_revoked(self.consumer.assignment())

    async def assign(self, *partitions: int) -> None:
        assigned = {tp(p) for p in partitions}
        self.consumer.assign(assigned)
        await self.runner.on_partitions_assigned(assigned)
        self.consumer.wake()

    async def rebalance(self, *partitions: int) -> None:
        await self.revoke()
        await self.assign(*partitions)


def stopped(lane: Lane) -> bool:
    return lane._task.done()


@pytest.mark.asyncio
async def test_an_assignment_starts_one_lane_per_partition_each_in_order() -> None:
    group = FakeGroup(3)
    for partition in range(3):
        group.append(partition, 3)
    async with Member(group) as member:
        await member.assign(0, 1, 2)
        await within_turns(lambda: len(member.handler.handled) == 9, "all 9 records handled")
        lanes = member.runner.lanes
        assert set(lanes) == {tp(0), tp(1), tp(2)}
        assert all(lane.tp == key for key, lane in lanes.items())
        assert len({id(lane) for lane in lanes.values()}) == 3
        for partition in range(3):
            assert member.handler.of(partition) == [0, 1, 2]
            assert lanes[tp(partition)].done == 3
        assert member.consumer.seeks == []  # new lanes read from the committed offsets


@pytest.mark.asyncio
async def test_a_revocation_commits_what_was_settled_and_stops_exactly_the_lanes_gone(
        ) -> None:
    group = FakeGroup(3)
    async with Member(group) as member:
        handler = member.handler
        confirmed = handler.defer(1, 1)  # p1's second record waits for its confirmation
        handler.hold(2, 0)  # p2's first record stays in the handler
        group.append(0, 2)
        group.append(1, 2)
        group.append(2, 1)
        await member.assign(0, 1, 2)
        await within_turns(lambda: handler.of(0) == [0, 1] and handler.of(1) == [0, 1]
                           and (2, 0) in handler.started, "records handled, p2's in flight")
        before = member.runner.lanes

        revoking = asyncio.create_task(member.revoke())
        await turns()
        assert not revoking.done()  # it waits for p1's pending confirmation
        assert group.commits == []
        confirmed.set_result(None)
        await revoking
        # Each lane up to what it handled and got confirmed; p2's record is in flight.
        assert group.commits == [{tp(0): 2, tp(1): 2}]
        assert not any(stopped(lane) for lane in before.values())  # kept until assigned

        await member.assign(0)
        lanes = member.runner.lanes
        assert set(lanes) == {tp(0)}
        assert lanes[tp(0)] is before[tp(0)]
        assert not stopped(before[tp(0)])
        assert stopped(before[tp(1)])
        assert stopped(before[tp(2)])
        assert handler.cancelled == [(2, 0)]  # stopped mid-record: never handled, not committed
        assert tp(2) not in group.committed

        group.append(0)  # the kept lane goes on
        await within_turns(lambda: handler.of(0) == [0, 1, 2], "p0's next record handled")
        assert handler.of(1) == [0, 1]
        assert (2, 0) not in handler.handled


@pytest.mark.asyncio
async def test_a_partition_that_comes_back_keeps_its_lane_and_nothing_is_handled_twice(
        ) -> None:
    group = FakeGroup(1)
    async with Member(group) as member:
        handler = member.handler
        gate = handler.hold(0, 1)
        group.append(0, 4)
        await member.assign(0)
        await within_turns(lambda: (0, 1) in handler.started, "record 1 in the handler")
        lane = member.runner.lanes[tp(0)]
        assert lane.fed == 4  # records 2 and 3 wait in the lane behind record 1

        await member.revoke()  # returns although record 1 is still in the handler
        assert group.commits == [{tp(0): 1}]
        await member.assign(0)
        assert member.runner.lanes[tp(0)] is lane
        # The group's position would be the committed 1; the runner seeks past its lane.
        assert member.consumer.seeks == [(tp(0), 4)]

        gate.set_result(None)
        group.append(0)
        await within_turns(lambda: handler.of(0) == [0, 1, 2, 3, 4], "records 1 to 4 handled")
        await turns()
        assert handler.handled == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4)]  # each once
        assert handler.cancelled == []


@pytest.mark.asyncio
async def test_a_partition_moved_to_another_member_goes_on_from_the_committed_offset(
        ) -> None:
    group = FakeGroup(2)
    async with Member(group) as first, Member(group) as second:
        first.handler.hold(0, 3)  # in flight when the partition moves
        group.append(0, 4)
        group.append(1, 1)
        await first.assign(0, 1)
        await within_turns(lambda: (0, 3) in first.handler.started, "record 3 in the handler")
        moved = first.runner.lanes[tp(0)]

        await first.revoke()
        await second.revoke()
        assert group.committed == {tp(0): 3, tp(1): 1}
        await first.assign(1)
        await second.assign(0)
        assert stopped(moved)
        assert first.handler.cancelled == [(0, 3)]

        group.append(0)
        await within_turns(lambda: second.handler.of(0) == [3, 4], "records 3 and 4 handled")
        # Record 3, cut off at the first member, is handled again: at least once.
        assert first.handler.of(0) == [0, 1, 2]
        assert second.consumer.seeks == []
        await second.revoke()
        assert group.committed[tp(0)] == 5


@pytest.mark.asyncio
async def test_a_confirmation_that_never_comes_delays_a_revocation_only_the_settle_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(partitions, "SETTLE_SECONDS", 0.05)
    group = FakeGroup(1)
    async with Member(group) as member:
        member.handler.defer(0, 1)  # never confirmed
        group.append(0, 3)
        await member.assign(0)
        await within_turns(lambda: member.handler.of(0) == [0, 1, 2], "3 records handled")
        await member.revoke()
        # Record 1 is not confirmed: neither it nor record 2 after it is committed.
        assert group.commits == [{tp(0): 1}]
