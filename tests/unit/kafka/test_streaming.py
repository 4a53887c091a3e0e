"""auditrelay.kafka.streaming's pure parts: what to commit, how long a fetch may wait."""

from __future__ import annotations

from auditrelay.kafka.streaming import commit_points, poll_timeout_ms

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
