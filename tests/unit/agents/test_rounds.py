"""agents.rounds without a broker: offsets and settling rounds."""

from __future__ import annotations

import pytest

from agents.rounds import Round, next_offsets, settle


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
