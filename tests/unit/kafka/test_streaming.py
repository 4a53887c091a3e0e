"""auditrelay.kafka.streaming: what to commit, how long a fetch may wait; the reader's commits
with a scripted consumer and stage (no broker)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import TopicPartition

from auditrelay.kafka.streaming import StreamReader, commit_points, poll_timeout_ms
from tests.support.polling import within_turns

A, B, C = ("audit.events", 0), ("audit.events", 1), ("audit.events", 2)


def test_commit_points_stop_at_what_is_held() -> None:
    consumed = {A: 120, B: 50, C: 7}
    held = {A: 100, C: 7}
    assert commit_points(consumed, held, {}) == {A: 100, B: 50, C: 7}


def test_commit_points_only_move_forward() -> None:
    consumed = {A: 120, B: 50}
    assert commit_points(consumed, {A: 100}, {A: 100, B: 40}) == {B: 50}
    assert commit_points(consumed, {}, {A: 100, B: 50}) == {A: 120}
    assert commit_points(consumed, {}, {A: 120, B: 50}) == {}


def test_a_held_partition_not_consumed_is_not_committed() -> None:
    # Held offsets come from consumed records; nothing consumed there means nothing to say.
    assert commit_points({A: 10}, {B: 3}, {}) == {A: 10}


def test_poll_timeout_until_the_next_due() -> None:
    assert poll_timeout_ms(100.0, None, 500) == 500
    assert poll_timeout_ms(100.0, 100.25, 500) == 250
    assert poll_timeout_ms(100.0, 107.0, 500) == 500
    assert poll_timeout_ms(100.0, 99.0, 500) == 0


# -- StreamReader with a scripted consumer and stage (no broker) ---------------------------


@dataclass(frozen=True)
class Rec:
    topic: str
    partition: int
    offset: int


class FakeConsumer:
    """Hands out scripted fetches, then nothing; records commits."""

    def __init__(self, fetches: list[list[Rec]]) -> None:
        self.fetches = list(fetches)
        self.commits: list[dict[tuple[str, int], int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.parts = {TopicPartition(*A), TopicPartition(*B)}

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[Any, list[Rec]]:
        if self.fetches:
            records = self.fetches.pop(0)
            return {TopicPartition(records[0].topic, records[0].partition): records} \
                if records else {}
        await asyncio.sleep(0)  # no clock: an empty fetch is one turn
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append({(tp.topic, tp.partition): o for tp, o in offsets.items()})

    def assignment(self) -> set[TopicPartition]:
        return self.parts

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))


class FakeStage:
    """Holds the last ``hold`` records it was given until flushed; from step ``hang_from``
    on (counting from 1) a step never returns (a produce never confirmed)."""

    def __init__(self, hold: int = 0, hang_from: int = 0) -> None:
        self.hold = hold
        self.hang_from = hang_from
        self.held_records: list[Rec] = []
        self.steps = 0
        self.flushed = 0

    async def step(self, records: list[Any], now: float) -> None:
        self.steps += 1
        if self.hang_from and self.steps >= self.hang_from:
            await asyncio.Event().wait()
        self.held_records = (self.held_records + records)[-self.hold:] if self.hold else []

    async def flush(self) -> None:
        self.flushed += 1
        self.held_records = []

    def next_due(self) -> float | None:
        return None

    def held(self) -> dict[tuple[str, int], int]:
        lowest: dict[tuple[str, int], int] = {}
        for r in self.held_records:
            part = (r.topic, r.partition)
            lowest[part] = min(lowest.get(part, r.offset), r.offset)
        return lowest


def recs(part: tuple[str, int], first: int, count: int) -> list[Rec]:
    return [Rec(part[0], part[1], first + n) for n in range(count)]


async def run_until(reader: StreamReader, done: Any) -> None:
    task = asyncio.ensure_future(reader.run())
    try:
        await within_turns(done, "the reader did not get there", turns=2000)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.asyncio
async def test_the_reader_commits_up_to_what_the_stage_holds() -> None:
    kafka = FakeConsumer([recs(A, 0, 10), recs(B, 0, 4)])
    stage = FakeStage(hold=3)  # the last 3 records given: B 1 - 3
    reader = StreamReader(kafka, stage, name="t", max_records=100,
                          commit_interval=0.0)
    def committed() -> dict[tuple[str, int], int]:
        out: dict[tuple[str, int], int] = {}
        for commit in kafka.commits:
            out.update(commit)
        return out

    await run_until(reader, lambda: committed() == {A: 10, B: 1})
    await reader.close()  # nothing new is safe
    assert committed() == {A: 10, B: 1}


@pytest.mark.asyncio
async def test_cancelled_in_a_step_the_reader_commits_only_what_came_before() -> None:
    kafka = FakeConsumer([recs(A, 0, 10), recs(A, 10, 10)])
    stage = FakeStage(hang_from=2)  # the second step's produce never confirms
    reader = StreamReader(kafka, stage, name="t", max_records=100,
                          commit_interval=1e9)  # no commit but the last
    task = asyncio.ensure_future(reader.run())
    await within_turns(lambda: stage.steps == 2, "the second step", turns=2000)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await reader.close()
    assert kafka.commits == [{A: 10}]


@pytest.mark.asyncio
async def test_a_revocation_flushes_the_stage_then_commits_everything_read() -> None:
    kafka = FakeConsumer([recs(A, 0, 10)])
    stage = FakeStage(hold=5)
    reader = StreamReader(kafka, stage, name="t", max_records=100,
                          commit_interval=1e9)
    await run_until(reader, lambda: reader.steps == 1)
    await reader.on_partitions_revoked({TopicPartition(*A)})
    assert stage.flushed == 1
    assert kafka.commits[-1] == {A: 10}
