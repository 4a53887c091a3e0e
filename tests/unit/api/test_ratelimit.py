"""The API's limiters, on a clock the tests move: no sleeps, exact waits."""

from __future__ import annotations

import pytest

from auditrelay.api.ratelimit import (
    ApiLimits,
    FailureBackoff,
    SlidingWindow,
    retry_after_header,
)
from auditrelay.schemas.errors import RateLimitedError
from auditrelay.schemas.settings import Settings
from tests.support.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def test_a_window_allows_its_limit_then_says_how_long_to_wait(clock: ManualClock) -> None:
    window = SlidingWindow(3, 60.0, clock=clock)
    for _ in range(3):
        assert window.wait("k") == 0
        window.hit("k")
        clock.now += 10
    assert window.wait("k") == pytest.approx(30.0)  # the first hit leaves at 1060
    assert window.wait("other") == 0
    clock.now = 1060.0
    assert window.wait("k") == 0


def test_a_window_of_one_spaces_events(clock: ManualClock) -> None:
    window = SlidingWindow(1, 5.0, clock=clock)
    window.hit("d")
    clock.now += 4.5
    assert window.wait("d") == pytest.approx(0.5)
    clock.now += 0.5
    assert window.wait("d") == 0


def test_a_window_of_zero_seconds_never_waits(clock: ManualClock) -> None:
    window = SlidingWindow(1, 0.0, clock=clock)
    window.hit("d")
    window.hit("d")
    assert window.wait("d") == 0


def test_a_window_forgets_the_least_recently_used_key_beyond_its_bound(clock: ManualClock) -> None:
    window = SlidingWindow(1, 60.0, clock=clock, max_keys=3)
    for key in ("a", "b", "c"):
        window.hit(key)
    assert window.wait("a") > 0  # a is now the most recently used
    for n in range(1000):
        window.hit(f"rotating-{n}")
    assert len(window) == 3
    assert window.wait("a") == 0  # evicted: memory stayed bounded


def test_backoff_refuses_after_the_threshold_then_doubles_up_to_the_cap(clock: ManualClock) -> None:
    backoff = FailureBackoff(10, 60.0, base=60.0, cap=900.0, clock=clock)
    for _ in range(9):
        assert backoff.failure("ip") == 0
        assert backoff.wait("ip") == 0
        clock.now += 1
    assert backoff.failure("ip") == 60.0  # the tenth within a minute
    assert backoff.wait("ip") == 60.0
    waits = []
    for _ in range(6):
        clock.now += backoff.wait("ip")  # a patient attacker tries again at once
        assert backoff.wait("ip") == 0
        waits.append(backoff.failure("ip"))
    assert waits == [120.0, 240.0, 480.0, 900.0, 900.0, 900.0]


def test_backoff_forgets_a_key_quiet_for_the_cap_after_its_refusal(clock: ManualClock) -> None:
    backoff = FailureBackoff(2, 60.0, base=60.0, cap=900.0, clock=clock)
    backoff.failure("ip")
    assert backoff.failure("ip") == 60.0
    clock.now += 60 + 899
    assert backoff.suspect("ip")
    assert backoff.failure("ip") == 120.0  # not yet forgiven: it doubles
    clock.now += 120 + 900
    assert not backoff.suspect("ip")
    assert len(backoff) == 0
    assert backoff.failure("ip") == 0  # afresh


def test_failures_spread_over_more_than_the_window_are_never_refused(clock: ManualClock) -> None:
    backoff = FailureBackoff(10, 60.0, base=60.0, cap=900.0, clock=clock)
    for _ in range(100):
        assert backoff.failure("ip") == 0
        clock.now += 7  # fewer than ten a minute
    assert not backoff.suspect("other")


def test_backoff_memory_is_bounded(clock: ManualClock) -> None:
    backoff = FailureBackoff(10, 60.0, base=60.0, cap=900.0, clock=clock, max_keys=100)
    for n in range(10_000):
        backoff.failure(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
    assert len(backoff) == 100


@pytest.mark.parametrize(("seconds", "header"), [(0.01, "1"), (1.0, "1"), (1.2, "2"),
                                                 (59.9, "60"), (0.0, "1")])
def test_retry_after_is_whole_seconds_rounded_up(seconds: float, header: str) -> None:
    assert retry_after_header(seconds) == header


def _limits(clock: ManualClock, **settings: object) -> ApiLimits:
    return ApiLimits.from_settings(Settings(**settings), clock=clock)  # type: ignore[arg-type]


def test_test_sends_are_limited_per_destination_and_per_workspace(clock: ManualClock) -> None:
    limits = _limits(clock)
    limits.take_test_send("ws_a", "dst_1")
    with pytest.raises(RateLimitedError) as refused:
        limits.take_test_send("ws_a", "dst_1")
    assert refused.value.retry_after == pytest.approx(5.0)
    for n in range(2, 31):
        limits.take_test_send("ws_a", f"dst_{n}")
    with pytest.raises(RateLimitedError) as refused:
        limits.take_test_send("ws_a", "dst_31")
    assert "30 tests in the last minute" in str(refused.value)
    limits.take_test_send("ws_b", "dst_b")  # another workspace is not held back
    clock.now += 60
    limits.take_test_send("ws_a", "dst_31")  # a refused send used no allowance


def test_a_refused_attempt_is_not_counted_against_the_destination(clock: ManualClock) -> None:
    limits = _limits(clock, test_send_workspace_per_minute=1)
    limits.take_test_send("ws_a", "dst_1")
    clock.now += 6
    with pytest.raises(RateLimitedError):
        limits.take_test_send("ws_a", "dst_2")  # the workspace's minute is used up
    clock.now += 60
    limits.take_test_send("ws_a", "dst_2")


def test_a_workspace_lockout_holds_back_failing_addresses_only(clock: ManualClock) -> None:
    limits = _limits(clock)
    for n in range(10):  # a distributed guesser: ten addresses, one failure each
        limits.check_authentication(f"198.51.100.{n}", "ws_a")
        limits.failed_authentication(f"198.51.100.{n}", "ws_a", via="bearer")
    with pytest.raises(RateLimitedError) as refused:
        limits.check_authentication("198.51.100.3", "ws_a")
    assert "workspace ws_a" in str(refused.value)
    limits.check_authentication("203.0.113.7", "ws_a")  # the tenant's own client
    limits.check_authentication("198.51.100.3", "ws_b")  # other workspaces are not locked
    limits.check_authentication("198.51.100.3", None)


def test_an_address_lockout_applies_to_every_workspace(clock: ManualClock) -> None:
    limits = _limits(clock)
    for n in range(10):
        limits.failed_authentication("198.51.100.1", f"ws_{n}", via="sign_in")
    for ws in ("ws_0", "ws_other", None):
        with pytest.raises(RateLimitedError) as refused:
            limits.check_authentication("198.51.100.1", ws)
        assert refused.value.retry_after == 60.0
        assert "from this address" in str(refused.value)
