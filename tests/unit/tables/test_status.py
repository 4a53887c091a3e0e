"""Which delivery statuses may be coalesced (``auditrelay.tables.status.same_but_timestamps``),
and what a wait on the status board tells (``StatusBoard.wait_change``)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from auditrelay.schemas.status import DestinationStatus
from auditrelay.tables.status import StatusBoard, same_but_timestamps

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def ok(at: datetime = T0, **changes: object) -> DestinationStatus:
    values: dict[str, object] = {
        "destination_id": "dst_1", "workspace_id": "ws1", "state": "ok",
        "last_delivery_at": at, "last_delivery_ok": True, "last_status_code": 200,
        "last_error": None, "consecutive_failures": 0, "next_attempt_at": None,
        "updated_at": at}
    values.update(changes)
    return DestinationStatus.model_validate(values)


def test_another_good_delivery_only_moves_the_timestamps() -> None:
    later = T0 + timedelta(milliseconds=5)
    assert same_but_timestamps(ok(), ok(later))
    assert same_but_timestamps(ok(), ok())  # the same status twice


def test_an_older_status_never_coalesces_a_newer_one() -> None:
    assert not same_but_timestamps(ok(T0 + timedelta(seconds=1)), ok(T0))


@pytest.mark.parametrize("change", [
    {"state": "failing", "consecutive_failures": 1, "last_delivery_ok": False,
     "last_status_code": 503, "last_error": "HTTP 503",
     "next_attempt_at": T0 + timedelta(seconds=10)},
    {"state": "disabled"},
    {"last_status_code": 204},
    {"last_error": "something new"},
    {"consecutive_failures": 2},
    {"next_attempt_at": T0 + timedelta(seconds=10)},
    {"last_delivery_ok": False},
    {"destination_id": "dst_2"},
    {"workspace_id": "ws2"},
])
def test_any_other_change_is_news(change: dict[str, object]) -> None:
    later = T0 + timedelta(milliseconds=5)
    assert not same_but_timestamps(ok(), ok(later, **change))


def test_a_first_delivery_time_is_news() -> None:
    never = ok(last_delivery_at=None, last_delivery_ok=None, last_status_code=None)
    assert not same_but_timestamps(never, ok(T0 + timedelta(seconds=1)))
    assert same_but_timestamps(never, never.model_copy(
        update={"updated_at": T0 + timedelta(seconds=1)}))


def test_a_wait_tells_a_change_from_a_timeout() -> None:
    async def run() -> tuple[bool, bool]:
        board = StatusBoard()
        timed_out = await board.wait_change(0.01)
        waiting = asyncio.create_task(board.wait_change(30.0))
        await asyncio.sleep(0)  # let the waiter take the board's current event
        board.update(ok())
        return timed_out, await asyncio.wait_for(waiting, 5.0)

    assert asyncio.run(run()) == (False, True)


def test_a_wait_for_one_destination_wakes_only_for_that_one() -> None:
    async def run() -> tuple[bool, bool]:
        board = StatusBoard()
        waiting = asyncio.create_task(board.wait_change(30.0, "dst_a"))
        await asyncio.sleep(0)
        board.update(ok().model_copy(update={"destination_id": "dst_other"}))
        for _ in range(10):
            await asyncio.sleep(0)
        woken_by_another = waiting.done()
        board.update(ok().model_copy(update={"destination_id": "dst_a"}))
        return woken_by_another, await asyncio.wait_for(waiting, 5.0)

    assert asyncio.run(run()) == (False, True)
