"""auditrelay.kafka.clients without a broker: the fetch loop's backoff, and a start that
is cancelled, the partitioner. The starts are fakes the test holds (events and futures), so what
happens first never depends on timers or on how busy the machine is."""

from __future__ import annotations

import pytest


@pytest.mark.asyncio
async def test_fetch_waits_out_a_growing_backoff_after_errors_and_resets_on_success() -> None:
    from aiokafka.errors import KafkaConnectionError

    from auditrelay.kafka.backoff import Backoff
    from auditrelay.kafka.clients import fetch

    class Flaky:
        def __init__(self) -> None:
            self.calls = 0

        async def getmany(self, **kwargs: object) -> dict[str, list[int]]:
            self.calls += 1
            if self.calls <= 2:
                raise KafkaConnectionError("broker down")
            return {"tp": [1]}

    backoff = Backoff(0.001, 0.003)
    kafka = Flaky()
    assert await fetch(kafka, backoff, "test") is None
    assert backoff.delay == 0.002
    assert await fetch(kafka, backoff, "test") is None
    assert backoff.delay == 0.003  # capped
    assert await fetch(kafka, backoff, "test", timeout_ms=5) == {"tp": [1]}
    assert backoff.delay == 0.001


@pytest.mark.asyncio
async def test_a_cancelled_start_runs_to_its_end_and_the_cancellation_is_raised_after() -> None:
    import asyncio

    from auditrelay.kafka.clients import started_through_cancellation

    steps: list[str] = []
    connecting = asyncio.Event()
    connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def start() -> None:
        steps.append("connecting")
        connecting.set()
        await connected  # the broker's answer, which the test gives
        steps.append("connected")

    waiter = asyncio.ensure_future(started_through_cancellation(start()))
    await connecting.wait()
    waiter.cancel()  # in the middle of the start
    for _ in range(50):  # every ready task runs meanwhile; the start cannot end
        await asyncio.sleep(0)
    assert not waiter.done()  # the cancellation waits for the start
    assert steps == ["connecting"]
    connected.set_result(None)
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert steps == ["connecting", "connected"]


@pytest.mark.asyncio
async def test_a_cancelled_start_that_hangs_is_cancelled_after_the_grace_period(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from auditrelay.kafka import clients as kafka_io

    monkeypatch.setattr(kafka_io, "START_GRACE_SECONDS", 0.05)
    began = asyncio.Event()
    hanging: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def start() -> None:
        began.set()
        await hanging  # never answered

    waiter = asyncio.ensure_future(kafka_io.started_through_cancellation(start()))
    await began.wait()
    waiter.cancel()  # in the middle of the start, which then outlives the grace period
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiter, timeout=5)
    assert hanging.cancelled()


@pytest.mark.asyncio
async def test_a_rebalance_is_one_line_of_counts_and_the_inner_listener_still_runs(
        caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from aiokafka import TopicPartition

    from auditrelay.kafka.clients import RebalanceSummary, rebalance_line

    calls: list[tuple[str, int]] = []

    class Inner:  # one plain and one coroutine callback: aiokafka accepts both
        def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
            calls.append(("revoked", len(revoked)))

        async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
            calls.append(("assigned", len(assigned)))

    first = {TopicPartition(f"dest.d{n}", p) for n in range(1198) for p in (0,)}
    second = (first - {TopicPartition("dest.d0", 0)}) | {
        TopicPartition("dest.new", p) for p in range(3)}
    summary = RebalanceSummary("delivery", Inner())
    with caplog.at_level(logging.INFO, logger="auditrelay.kafka.clients"):
        await summary.on_partitions_revoked(set())
        await summary.on_partitions_assigned(first)
        await summary.on_partitions_revoked(first)
        await summary.on_partitions_assigned(second)
    assert [r.getMessage() for r in caplog.records] == [
        "group delivery: assigned 1198 partitions of 1198 topics (was 0; 1198 new, 0 gone)",
        "group delivery: assigned 1200 partitions of 1198 topics (was 1198; 3 new, 1 gone)"]
    assert calls == [("revoked", 0), ("assigned", 1198), ("revoked", 1198), ("assigned", 1200)]
    assert rebalance_line("g", second, set()) == (
        "group g: assigned 0 partitions of 0 topics (was 1200; 0 new, 1200 gone)")


def test_the_key_hash_partitioner_picks_aiokafkas_partitions() -> None:
    import random

    from aiokafka.partitioner import DefaultPartitioner

    from auditrelay.kafka.clients import KeyHashPartitioner

    chance = random.Random(7)
    ours, theirs = KeyHashPartitioner(limit=50), DefaultPartitioner()
    keys = [bytes(chance.randrange(256) for _ in range(chance.randrange(1, 40)))
            for _ in range(200)] + [b"dst_01KBQ6R0S5M8J3Z2XG5B9W3F7Q", b"ws_a"]
    for partitions in ([0], list(range(6)), list(range(12)), [3, 4, 5]):
        for key in keys * 2:  # again: from what it remembered (and forgot, past 50)
            assert ours(key, partitions, partitions) == theirs(key, partitions, partitions)
    assert ours(None, [0, 1], [1]) == 1  # no key: one of the available ones
