"""agents.rounds without a broker: offsets and settling rounds."""

from __future__ import annotations

import pytest

from agents.rounds import Round, next_offsets, round_deadline, settle


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
