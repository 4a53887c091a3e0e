"""``auditrelay.kafka.keyed``: a lane per key, commits at the lowest unsettled record,
bounded memory, diverting, and rebalances, over a fake consumer. Real asyncio
futures; no broker, no timers."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, cast

import pytest
from aiokafka import TopicPartition

from auditrelay.kafka import keyed
from auditrelay.kafka.keyed import KeyedRunner, Lane, lane_by_partition_and_key
from tests.support.polling import eventually, within_turns

TOPIC = "test.deliveries"
PARKED = "test.parked"


def tp(partition: int, topic: str = TOPIC) -> TopicPartition:
    return TopicPartition(topic, partition)


@dataclass(frozen=True)
class Message:
    """What the runner reads of an aiokafka ``ConsumerRecord``."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes = b"x"


class FakeGroup:
    """The broker's side of one consumer group: each partition's log, committed offsets."""

    def __init__(self, partitions: int, topics: tuple[str, ...] = (TOPIC,)) -> None:
        self.logs: dict[TopicPartition, list[Message]] = {
            tp(p, t): [] for t in topics for p in range(partitions)}
        self.committed: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, int]] = []
        self.consumers: list[FakeConsumer] = []

    def append(self, partition: int, *keys: str, topic: str = TOPIC, size: int = 1) -> None:
        log = self.logs[tp(partition, topic)]
        for key in keys:
            log.append(Message(topic, partition, len(log), key.encode(), b"x" * size))
        for consumer in self.consumers:
            consumer.wake()


class FakeConsumer:
    """The part of ``AIOKafkaConsumer`` the runner uses, over a ``FakeGroup``: ``getmany``
    returns what follows each position of the assigned, unpaused partitions, waits (no
    clock) while there is nothing, and fetches nothing during a rebalance."""

    def __init__(self, group: FakeGroup) -> None:
        self.group = group
        group.consumers.append(self)
        self._assigned: set[TopicPartition] = set()
        self._paused: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.pauses: list[TopicPartition] = []
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
        self._assigned = set(partitions)
        self._paused.clear()
        self.positions = {p: self.group.committed.get(p, 0) for p in partitions}
        self._rebalancing = False

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def pause(self, *partitions: TopicPartition) -> None:
        self.pauses.extend(partitions)
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
    """A handler recording each (topic, partition, offset) it handles by key; the test may
    hold a record in the handler (``hold``) or defer its confirmation (``defer``)."""

    def __init__(self) -> None:
        self.started: list[tuple[str, int, int]] = []
        self.handled: list[tuple[str, int, int]] = []
        self.by_key: dict[bytes | None, list[int]] = {}
        self.cancelled: list[tuple[str, int, int]] = []
        self.gates: dict[tuple[str, int, int], asyncio.Future[None]] = {}
        self.confirmations: dict[tuple[str, int, int], asyncio.Future[None]] = {}

    def hold(self, partition: int, offset: int, topic: str = TOPIC) -> asyncio.Future[None]:
        gate = asyncio.get_running_loop().create_future()
        self.gates[topic, partition, offset] = gate
        return gate

    def defer(self, partition: int, offset: int, topic: str = TOPIC) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self.confirmations[topic, partition, offset] = future
        return future

    def release_all(self) -> None:
        for future in (*self.gates.values(), *self.confirmations.values()):
            if not future.done():
                future.set_result(None)

    async def __call__(self, record: Any, lane: Lane) -> None:
        at = (record.topic, record.partition, record.offset)
        self.started.append(at)
        try:
            if at in self.gates:
                with lane.holding():
                    await self.gates[at]
        except asyncio.CancelledError:
            self.cancelled.append(at)
            raise
        if at in self.confirmations:
            lane.confirm_after(self.confirmations[at])
        self.handled.append(at)
        self.by_key.setdefault(record.key, []).append(record.offset)


class Member:
    """One group member: a ``KeyedRunner`` over a ``FakeConsumer``. The test plays the
    group coordinator (an eager rebalance: every partition revoked first)."""

    def __init__(self, group: FakeGroup, handler: Scripted | None = None,
                 **options: Any) -> None:
        self.handler = handler or Scripted()
        self.consumer = FakeConsumer(group)
        # No periodic commits: every commit seen here is a rebalance's or a stop's.
        self.runner = KeyedRunner(cast(Any, self.consumer), self.handler, name="test",
                                  commit_interval=3600.0, **options)
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

    async def assign(self, *partitions: TopicPartition) -> None:
        self.consumer.assign(set(partitions))
        await self.runner.on_partitions_assigned(set(partitions))
        self.consumer.wake()


def k(name: str) -> bytes:
    return name.encode()


@pytest.mark.asyncio
async def test_each_key_in_order_and_a_held_key_holds_back_only_itself() -> None:
    group = FakeGroup(1)
    async with Member(group) as member:
        handler = member.handler
        gate = handler.hold(0, 0)  # a's first record hangs (a slow receiver)
        group.append(0, "a", "b", "a", "c", "b")
        await member.assign(tp(0))
        await within_turns(lambda: handler.by_key.get(k("b")) == [1, 4]
                           and handler.by_key.get(k("c")) == [3], "b and c handled")
        assert k("a") not in handler.by_key  # a's second record waits behind its first
        assert member.runner.commit_point(tp(0)) == 0  # the lowest unsettled record
        gate.set_result(None)
        await within_turns(lambda: handler.by_key.get(k("a")) == [0, 2], "a handled in order")
        await within_turns(lambda: member.runner.commit_point(tp(0)) == 5)
        await within_turns(lambda: member.runner.lanes == {}, "idle lanes forgotten")


@pytest.mark.asyncio
async def test_the_commit_point_waits_for_deferred_confirmations_and_never_passes_a_failed_one(
        ) -> None:
    group = FakeGroup(1)
    async with Member(group) as member:
        handler = member.handler
        first = handler.defer(0, 0)
        second = handler.defer(0, 1)
        group.append(0, "a", "b", "c")
        await member.assign(tp(0))
        await within_turns(lambda: len(handler.handled) == 3, "3 records handled")
        assert member.runner.commit_point(tp(0)) == 0
        second.set_result(None)
        await within_turns(lambda: member.runner.commit_point(tp(0)) == 0)
        first.set_exception(RuntimeError("not confirmed"))
        for _ in range(50):
            await asyncio.sleep(0)
        assert member.runner.commit_point(tp(0)) == 0  # never past the failed one
        await member.revoke()
        assert group.commits == []  # the commit point never moved off where it started


@pytest.mark.asyncio
async def test_a_partition_with_too_much_in_flight_is_paused_until_records_settle() -> None:
    group = FakeGroup(2)
    async with Member(group, max_records=3) as member:
        handler = member.handler
        gate = handler.hold(0, 0)
        group.append(0, "a", "a", "a", "a", "a")  # one key: all wait behind offset 0
        group.append(1, "z")
        await member.assign(tp(0), tp(1))
        await within_turns(lambda: tp(0) in member.consumer.paused(), "partition 0 paused")
        await within_turns(lambda: handler.by_key.get(k("z")) == [0], "partition 1 flows")
        assert member.runner.in_flight(tp(0)) >= 3
        gate.set_result(None)
        await within_turns(lambda: handler.by_key.get(k("a")) == [0, 1, 2, 3, 4],
                           "all of partition 0 handled once resumed")
        assert tp(0) not in member.consumer.paused()


@pytest.mark.asyncio
async def test_a_paused_partition_counts_bytes_too() -> None:
    group = FakeGroup(1)
    async with Member(group, max_bytes=100) as member:
        gate = member.handler.hold(0, 0)
        group.append(0, "a", "b", size=60)
        await member.assign(tp(0))
        await within_turns(lambda: tp(0) in member.consumer.paused(), "paused by bytes")
        gate.set_result(None)
        await within_turns(lambda: tp(0) not in member.consumer.paused(), "resumed")


@pytest.mark.asyncio
async def test_records_settled_behind_a_slow_one_do_not_pause_the_partition() -> None:
    # Issue #19: one destination's batch waiting on a slow receiver kept every record
    # after it "in flight" until it settled, and the partition of a thousand healthy
    # destinations was paused behind it.
    group = FakeGroup(1)
    async with Member(group, max_records=3) as member:
        handler = member.handler
        gate = handler.hold(0, 0)  # the slow one: offset 0, key "slow"
        group.append(0, "slow", *(f"ok{n}" for n in range(10)))
        await member.assign(tp(0))
        await within_turns(lambda: all(handler.by_key.get(k(f"ok{n}")) == [n + 1]
                                       for n in range(10)), "every other key handled")
        assert tp(0) not in member.consumer.paused()
        assert member.runner.in_flight(tp(0)) == 1
        assert member.runner.commit_point(tp(0)) == 0  # still never past the slow one
        gate.set_result(None)
        await within_turns(lambda: member.runner.commit_point(tp(0)) == 11, "committed on")


@pytest.mark.asyncio
async def test_offsets_kept_behind_a_slow_record_are_bounded() -> None:
    group = FakeGroup(1)
    async with Member(group, max_records=2) as member:
        gate = member.handler.hold(0, 0)
        behind = 2 * keyed.BEHIND_FACTOR
        group.append(0, "slow", *(f"ok{n}" for n in range(behind + 5)))
        await member.assign(tp(0))
        await within_turns(lambda: tp(0) in member.consumer.paused(), "paused at the bound")
        gate.set_result(None)
        await within_turns(lambda: member.runner.commit_point(tp(0)) == behind + 6,
                           "all handled once the slow one settled")


class Diverting:
    """Diverts records of the keys in ``divert`` (at feed time) and ``stop`` (when their
    turn comes), records of topic TOPIC only; records moves in order."""

    def __init__(self, divert: set[bytes], stop: set[bytes] | None = None) -> None:
        self.divert = divert
        self.stop = stop or set()
        self.moved: list[tuple[bytes | None, int]] = []
        self.gate: asyncio.Future[None] | None = None

    def movable(self, record: Any) -> bool:
        return bool(record.topic == TOPIC)

    def wants(self, record: Any, lane: Lane) -> bool:
        return record.key in self.divert or lane.moving > 0

    def stops(self, record: Any, lane: Lane) -> bool:
        return record.key in self.stop

    async def move(self, record: Any, lane: Lane) -> None:
        if self.gate is not None:
            await self.gate
        self.moved.append((record.key, record.offset))


@pytest.mark.asyncio
async def test_diverted_records_are_moved_in_order_and_settle_once_moved() -> None:
    group = FakeGroup(1)
    diverter = Diverting({k("bad")})
    async with Member(group, diverter=diverter) as member:
        diverter.gate = asyncio.get_running_loop().create_future()
        group.append(0, "bad", "ok", "bad", "bad")
        await member.assign(tp(0))
        await within_turns(lambda: member.handler.by_key.get(k("ok")) == [1], "ok handled")
        assert member.runner.commit_point(tp(0)) == 0  # the first move is not done
        diverter.gate.set_result(None)
        await within_turns(lambda: member.runner.commit_point(tp(0)) == 4, "all settled")
        assert diverter.moved == [(k("bad"), 0), (k("bad"), 2), (k("bad"), 3)]
        assert k("bad") not in member.handler.by_key


@pytest.mark.asyncio
async def test_a_diversion_takes_the_waiting_records_of_its_lane_first() -> None:
    group = FakeGroup(1)
    diverter = Diverting(set())
    async with Member(group, diverter=diverter) as member:
        gate = member.handler.hold(0, 0)
        group.append(0, "a", "a", "a")
        await member.assign(tp(0))
        await within_turns(lambda: (TOPIC, 0, 0) in member.handler.started)
        diverter.divert.add(k("a"))  # say, its lane is full from now on
        group.append(0, "a")
        await within_turns(lambda: len(diverter.moved) == 3, "three moved")
        # Those not started yet go first, in order; the one in flight stays.
        assert diverter.moved == [(k("a"), 1), (k("a"), 2), (k("a"), 3)]
        gate.set_result(None)
        await within_turns(lambda: member.runner.commit_point(tp(0)) == 4, "all settled")
        assert member.handler.by_key[k("a")] == [0]


@pytest.mark.asyncio
async def test_a_record_that_stops_when_its_turn_comes_leaves_with_those_behind_it() -> None:
    group = FakeGroup(1)
    diverter = Diverting(set())
    async with Member(group, diverter=diverter) as member:
        gate = member.handler.hold(0, 0)
        group.append(0, "a", "a", "a", "b")
        await member.assign(tp(0))
        await within_turns(lambda: (TOPIC, 0, 0) in member.handler.started)
        diverter.stop.add(k("a"))  # its circuit opens during the first attempt
        gate.set_result(None)
        await within_turns(lambda: member.runner.commit_point(tp(0)) == 4, "all settled")
        assert diverter.moved == [(k("a"), 1), (k("a"), 2)]
        assert member.handler.by_key == {k("a"): [0], k("b"): [3]}


@pytest.mark.asyncio
async def test_co_partitioned_topics_share_a_lane_per_partition_and_key() -> None:
    group = FakeGroup(1, (TOPIC, PARKED))
    async with Member(group, lane_of=lane_by_partition_and_key) as member:
        handler = member.handler
        gate = handler.hold(0, 0)
        group.append(0, "a")
        await member.assign(tp(0), tp(0, PARKED))
        await within_turns(lambda: (TOPIC, 0, 0) in handler.started)
        group.append(0, "a", topic=PARKED)  # comes back behind what the lane holds
        group.append(0, "b", topic=PARKED)
        await within_turns(lambda: (PARKED, 0, 1) in handler.handled, "b handled")
        assert (PARKED, 0, 0) not in handler.started
        lanes: dict[Hashable, Lane] = member.runner.lanes
        assert set(lanes) == {(0, k("a"))}
        gate.set_result(None)
        await within_turns(lambda: (PARKED, 0, 0) in handler.handled)
        assert handler.handled.index((TOPIC, 0, 0)) < handler.handled.index((PARKED, 0, 0))


@pytest.mark.asyncio
async def test_a_revocation_commits_what_settled_and_a_partition_that_comes_back_goes_on(
        ) -> None:
    group = FakeGroup(1)
    async with Member(group) as member:
        handler = member.handler
        gate = handler.hold(0, 1)
        group.append(0, "a", "b", "c", "b")
        await member.assign(tp(0))
        await within_turns(lambda: (TOPIC, 0, 1) in handler.started
                           and (TOPIC, 0, 2) in handler.handled, "b in flight, c done")
        await member.revoke()  # returns although b's record is still in the handler
        assert group.commits == [{tp(0): 1}]
        await member.assign(tp(0))
        assert member.consumer.seeks == [(tp(0), 4)]  # past what its lanes hold
        gate.set_result(None)
        group.append(0, "d")
        await within_turns(lambda: handler.by_key.get(k("b")) == [1, 3]
                           and handler.by_key.get(k("d")) == [4], "b and d handled")
        assert sorted(handler.handled) == sorted(set(handler.handled))  # each once
        assert handler.cancelled == []


@pytest.mark.asyncio
async def test_a_partition_moved_to_another_member_is_handled_again_from_its_commit_point(
        ) -> None:
    group = FakeGroup(2)
    async with Member(group) as first, Member(group) as second:
        first.handler.hold(0, 1)  # in flight when the partition moves
        group.append(0, "a", "b", "c")
        group.append(1, "z")
        await first.assign(tp(0), tp(1))
        await within_turns(lambda: (TOPIC, 0, 1) in first.handler.started
                           and (TOPIC, 0, 2) in first.handler.handled)
        await first.revoke()
        await second.revoke()
        assert group.committed == {tp(0): 1, tp(1): 1}
        await first.assign(tp(1))
        await second.assign(tp(0))
        assert first.handler.cancelled == [(TOPIC, 0, 1)]
        await within_turns(lambda: second.handler.by_key.get(k("b")) == [1], "b again")
        # At least once: c, settled after the commit point, is handled again too.
        assert second.handler.by_key.get(k("c")) == [2]


@pytest.mark.asyncio
async def test_a_confirmation_that_never_comes_delays_a_revocation_only_the_settle_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keyed, "SETTLE_SECONDS", 0.05)
    group = FakeGroup(1)
    async with Member(group) as member:
        member.handler.defer(0, 1)  # never confirmed
        group.append(0, "a", "b", "c")
        await member.assign(tp(0))
        await within_turns(lambda: len(member.handler.handled) == 3, "3 records handled")
        await member.revoke()
        assert group.commits == [{tp(0): 1}]


@pytest.mark.asyncio
async def test_a_failing_handler_is_retried_and_the_record_never_skipped() -> None:
    calls: list[int] = []

    async def flaky(record: Any, lane: Lane) -> None:
        calls.append(record.offset)
        if len(calls) < 3:
            raise RuntimeError("a bug or an outage")

    group = FakeGroup(1)
    member = Member(group)
    member.runner.handler = flaky
    async with member:
        group.append(0, "a", "a")
        await member.assign(tp(0))
        # Two backoff waits: 0.5 s, then 1 s.
        await eventually(lambda: member.runner.commit_point(tp(0)) == 2, 10.0, "both settled")
    assert calls == [0, 0, 0, 1]
