"""auditrelay.kafka.rounds against the real broker: round sizes, commits after settling,
rebalances."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from confluent_kafka import Producer

from auditrelay.kafka.clients import consumer
from auditrelay.kafka.rounds import RoundReader
from tests.support.pipeline import committed_lag
from tests.support.polling import eventually

pytestmark = [pytest.mark.broker, pytest.mark.asyncio]


def produce(bootstrap: str, topic: str, count: int, partitions: int = 3,
            tag: str = "") -> list[bytes]:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    values = [f"v{i:05d}{tag}".encode() for i in range(count)]
    for i, value in enumerate(values):
        producer.produce(topic, value, partition=i % partitions)
    assert producer.flush(30) == 0
    return values


@contextlib.asynccontextmanager
async def reading(bootstrap: str, topic: str, group: str,
                  hand_over: Callable[[list[Any]], Any], *, max_records: int = 100,
                  window: float = 0.2) -> AsyncIterator[RoundReader]:
    kafka = consumer(bootstrap, group_id=group, client_id="test-rounds",
                     session_timeout_ms=6000, heartbeat_interval_ms=1000)
    reader = RoundReader(kafka, name="test", max_records=max_records, window=window)
    kafka.subscribe([topic], listener=reader)
    await kafka.start()
    task = asyncio.create_task(reader.run(hand_over))
    try:
        yield reader
    finally:
        reader.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await reader.close()
        await kafka.stop()


async def test_rounds_are_bounded_and_committed_after_they_are_settled(
        kafka_bootstrap: str, topic: str, group_id: str) -> None:
    values = produce(kafka_bootstrap, topic, 1000)
    rounds: list[list[Any]] = []
    fail_once = True

    async def hand_over(records: list[Any]) -> None:
        nonlocal fail_once
        if fail_once:  # not settled: nothing committed, the same records come again
            fail_once = False
            raise RuntimeError("agent failed")
        rounds.append(records)

    async with reading(kafka_bootstrap, topic, group_id, hand_over, max_records=150):
        await eventually(lambda: sum(map(len, rounds)) >= 1000, 30,
                         f"only {sum(map(len, rounds))} records handed over")
        await eventually(lambda: committed_lag(kafka_bootstrap, group_id, topic) == 0, 15,
                         "offsets not committed")
    assert all(len(r) <= 150 for r in rounds)
    got = [r.value for batch in rounds for r in batch]
    assert sorted(got) == values  # each exactly once: the failed round came back whole
    for partition in range(3):  # and in order within each partition
        mine = [r.offset for batch in rounds for r in batch if r.partition == partition]
        assert mine == sorted(mine)


async def test_a_round_waits_at_most_the_window_after_its_first_record(
        kafka_bootstrap: str, topic: str, group_id: str) -> None:
    rounds: list[tuple[float, list[Any]]] = []

    async def hand_over(records: list[Any]) -> None:
        rounds.append((asyncio.get_running_loop().time(), records))

    async with reading(kafka_bootstrap, topic, group_id, hand_over, max_records=1000,
                       window=0.5) as reader:
        await eventually(lambda: bool(reader._consumer.assignment()), 20, "no assignment")
        produced_at = asyncio.get_running_loop().time()
        await asyncio.to_thread(produce, kafka_bootstrap, topic, 5)
        await eventually(lambda: sum(len(r) for _, r in rounds) >= 5, 10, "records missing")
    # 5 records never fill a round of 1000: the window closed it.
    assert rounds[0][0] - produced_at < 3.0
    assert sum(len(r) for _, r in rounds) == 5


async def test_a_second_reader_takes_partitions_without_loss_or_reordering(
        kafka_bootstrap: str, make_topic: Any, group_id: str) -> None:
    topic = make_topic(partitions=4)
    values = produce(kafka_bootstrap, topic, 4000, partitions=4)
    seen: dict[str, list[Any]] = {"a": [], "b": []}

    def collector(name: str) -> Callable[[list[Any]], Any]:
        async def hand_over(records: list[Any]) -> None:
            await asyncio.sleep(0.05)  # rounds take a while: the second reader joins midway
            seen[name].extend(records)
        return hand_over

    async with reading(kafka_bootstrap, topic, group_id, collector("a"), max_records=25):
        await eventually(lambda: len(seen["a"]) >= 200, 30, "reader a never started")
        async with reading(kafka_bootstrap, topic, group_id, collector("b"), max_records=25):
            await eventually(lambda: len({r.value for rs in seen.values() for r in rs})
                             >= 4000, 60, "records missing")
            await eventually(lambda: committed_lag(kafka_bootstrap, group_id, topic) == 0,
                             15, "offsets not committed")
    assert seen["b"], "the second reader got no partition"
    assert {r.value for rs in seen.values() for r in rs} == set(values)
    # Redelivery after a rebalance is allowed (at least once) but only from the
    # committed offset: per partition, what each reader saw is in order.
    for records in seen.values():
        per_partition: dict[int, list[int]] = {}
        for record in records:
            per_partition.setdefault(record.partition, []).append(record.offset)
        for offsets in per_partition.values():
            assert offsets == sorted(offsets)


async def test_a_rebalance_in_the_middle_of_a_round_loses_nothing(
        kafka_bootstrap: str, make_topic: Any, group_id: str) -> None:
    """Rounds close by time (3 s), so the rebalance lands while the first reader gathers,
    with records fetched before and after its new assignment in the round it drops."""
    topic = make_topic(partitions=4)
    seen: list[Any] = []
    values: list[bytes] = []

    async def hand_over(records: list[Any]) -> None:
        seen.extend(records)

    async def feed(rounds: int) -> None:
        for n in range(rounds):
            values.extend(await asyncio.to_thread(produce, kafka_bootstrap, topic, 200, 4,
                                                  f"-{n}"))
            await asyncio.sleep(0.1)

    async with reading(kafka_bootstrap, topic, group_id, hand_over, max_records=100_000,
                       window=3.0) as first:
        await eventually(lambda: bool(first._consumer.assignment()), 20, "no assignment")
        feeding = asyncio.create_task(feed(40))
        await asyncio.sleep(0.5)
        async with reading(kafka_bootstrap, topic, group_id, hand_over, max_records=100_000,
                           window=3.0):
            await feeding
            await eventually(lambda: {r.value for r in seen} >= set(values), 60,
                             f"{len(set(values) - {r.value for r in seen})} records never "
                             "handed over")
