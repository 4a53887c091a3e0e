"""auditrelay.kafka.rounds without a broker: offsets and settling rounds."""

from __future__ import annotations

import pytest

from auditrelay.kafka.rounds import Round, next_offsets, round_deadline, settle


def test_next_offsets_are_one_past_the_last_record_of_each_partition() -> None:
    class R:
        def __init__(self, partition: int, offset: int) -> None:
            self.topic, self.partition, self.offset = "t", partition, offset

    offsets = next_offsets([R(0, 5), R(1, 2), R(0, 6)])
    assert {(tp.partition, o) for tp, o in offsets.items()} == {(0, 7), (1, 3)}


@pytest.mark.asyncio
async def test_settle_resolves_the_round_with_the_outcome_of_the_work() -> None:
    async def ok() -> None:
        return None

    async def boom() -> None:
        raise RuntimeError("bug")

    good, bad = Round([]), Round([])
    await settle(good, ok())
    with pytest.raises(RuntimeError):
        await settle(bad, boom())
    assert good.done.result() is None
    with pytest.raises(RuntimeError, match="bug"):
        bad.done.result()


@pytest.mark.parametrize(("oldest_ms", "deadline"), [
    (99_500, 100.5),   # produced 0.5 s ago: 0.5 s left of a 1 s window
    (100_000, 101.0),  # produced now: the whole window
    (90_000, 100.0),   # produced long ago (a backlog): close at once
    (105_000, 101.0),  # a producer clock ahead of ours: never more than the window
    (None, 101.0),     # no timestamp: the window from now
    (-1, 101.0),
])
def test_a_round_closes_a_window_after_its_oldest_record_was_produced(
        oldest_ms: int | None, deadline: float) -> None:
    assert round_deadline(100.0, oldest_ms, 1.0) == pytest.approx(deadline)


class FakeChannel:
    """Counts subscribers like a Faust channel; ``put`` rounds are settled by the test."""

    def __init__(self) -> None:
        self.subscriber_count = 0
        self.rounds: list[Round] = []

    async def put(self, batch: Round) -> None:
        self.rounds.append(batch)


@pytest.mark.asyncio
async def test_hand_over_waits_for_a_subscriber_then_for_the_round_to_be_settled(
        caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from auditrelay.kafka.rounds import hand_over_to

    channel = FakeChannel()
    hand_over = hand_over_to(channel, "test", report_seconds=0.05)
    task = asyncio.create_task(hand_over(["r1"]))
    await asyncio.sleep(0.05)
    assert channel.rounds == []  # nobody iterates the channel yet: a put would be lost
    channel.subscriber_count = 1
    while not channel.rounds:
        await asyncio.sleep(0.01)
    while "has waited" not in caplog.text:  # a slow agent is reported, not given up on
        await asyncio.sleep(0.01)
    assert not task.done()
    channel.rounds[0].done.set_result(None)
    await asyncio.wait_for(task, 5)

    failing = asyncio.create_task(hand_over(["r2"]))
    while len(channel.rounds) < 2:
        await asyncio.sleep(0.01)
    channel.rounds[1].done.set_exception(RuntimeError("agent bug"))
    with pytest.raises(RuntimeError, match="agent bug"):
        await asyncio.wait_for(failing, 5)
