from __future__ import annotations

import random

import pytest

from auditrelay.schemas.settings import Settings
from auditrelay.wire.retry_schedule import RetrySchedule

DEFAULT = RetrySchedule()


def test_tiers_follow_the_attempts_and_the_last_repeats() -> None:
    assert [DEFAULT.tier(n) for n in range(1, 10)] == [
        "10s", "1m", "5m", "30m", "2h", "5h", "10h", "10h", "10h"]


def test_base_waits_follow_the_contract_and_the_last_repeats() -> None:
    assert [DEFAULT.base_wait(n) for n in range(1, 9)] == [
        10, 60, 300, 1800, 7200, 18000, 36000, 36000]


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        DEFAULT.tier(0)
    with pytest.raises(ValueError, match="from 1"):
        DEFAULT.base_wait(0)


def test_jitter_stays_within_twenty_percent_and_varies() -> None:
    rng = random.Random(7)
    waits = [DEFAULT.wait(2, rng) for _ in range(500)]
    assert all(48 <= w <= 72 for w in waits)
    assert min(waits) < 52
    assert max(waits) > 68


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    assert DEFAULT.wait(3, random.Random(1)) == DEFAULT.wait(3, random.Random(1))


def test_no_jitter_gives_the_exact_wait() -> None:
    schedule = RetrySchedule((1, 2, 4), jitter=0)
    assert [schedule.wait(n, random.Random()) for n in (1, 2, 3, 4)] == [1, 2, 4, 4]


def test_retry_after_wins_and_is_clamped_to_the_schedule_range() -> None:
    rng = random.Random(0)
    assert DEFAULT.wait(1, rng, retry_after=120) == 120
    assert DEFAULT.wait(5, rng, retry_after=120) == 120  # shorter than the schedule: honoured
    assert DEFAULT.wait(1, rng, retry_after=0) == 10
    assert DEFAULT.wait(1, rng, retry_after=10**9) == 36000


def test_due_time_is_now_plus_the_wait_in_ms() -> None:
    schedule = RetrySchedule((1.5,), jitter=0)
    assert schedule.due_ms(1_000_000, 1, random.Random()) == 1_001_500
    assert schedule.due_ms(1_000_000, 1, random.Random(), retry_after=3) == 1_001_500


def test_gives_up_exactly_at_the_limit() -> None:
    schedule = RetrySchedule(give_up_seconds=72 * 3600)
    first = 1_000_000
    assert not schedule.exhausted(first, first + 72 * 3600 * 1000 - 1)
    assert schedule.exhausted(first, first + 72 * 3600 * 1000)


def test_from_settings_uses_the_compressed_schedule() -> None:
    settings = Settings(retry_schedule_seconds="1,2,4", retry_jitter=0.1,
                        retry_give_up_seconds=30)
    assert RetrySchedule.from_settings(settings) == RetrySchedule((1, 2, 4), 0.1, 30)


@pytest.mark.parametrize("kwargs", [{"waits": ()}, {"waits": (0,)}, {"jitter": 1.0},
                                    {"give_up_seconds": 0}])
def test_invalid_schedules_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"must|needs"):
        RetrySchedule(**kwargs)  # type: ignore[arg-type]
