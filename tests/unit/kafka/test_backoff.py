"""auditrelay.kafka.backoff: the doubling delay every retry loop waits on."""

from __future__ import annotations

import time

import pytest

from auditrelay.kafka.backoff import Backoff


def test_delays_double_up_to_the_ceiling_and_start_over_after_a_reset() -> None:
    backoff = Backoff(0.5, 10.0)
    assert [backoff.next() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.delay == 10.0
    backoff.reset()
    assert backoff.delay == 0.5
    assert backoff.next() == 0.5
    assert backoff.delay == 1.0


def test_a_ceiling_that_is_not_a_doubling_of_the_first_delay_is_still_reached() -> None:
    backoff = Backoff(0.3, 1.0)
    assert [backoff.next() for _ in range(4)] == [0.3, 0.6, 1.0, 1.0]


def test_the_defaults_are_half_a_second_to_thirty() -> None:
    backoff = Backoff()
    assert (backoff.first, backoff.delay, backoff.most) == (0.5, 0.5, 30.0)


@pytest.mark.asyncio
async def test_wait_sleeps_the_current_delay_then_doubles_it() -> None:
    backoff = Backoff(0.05, 1.0)
    for expected in (0.05, 0.1):
        started = time.monotonic()
        await backoff.wait()
        # The event loop's clock may round a timer a millisecond early, never more.
        assert time.monotonic() - started >= expected - 0.002
        assert backoff.delay == 2 * expected
