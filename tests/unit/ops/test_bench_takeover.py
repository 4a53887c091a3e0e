"""The figures ``bench takeover`` reads from the receipts around a moment."""

from __future__ import annotations

import pytest

from auditrelay.ops.bench_takeover import Moment, moment_figures, timeline

KILL, START = 100.0, 200.0
MOMENTS = [Moment("worker killed", KILL), Moment("worker started", START)]


def steady(first: float, last: float, latency: float) -> list[tuple[float, float]]:
    return [(t / 10, t / 10 + latency) for t in range(int(first * 10), int(last * 10))]


def test_a_stall_after_the_kill_shows_as_the_largest_latency_and_its_catch_up() -> None:
    receipts = (steady(0, 99, 0.05)
                # emitted from 1 s before the kill until 5 s after it, all held until 115
                + [(t, 115.0) for t in (99.0, 100.0, 102.0, 105.0)]
                + steady(105.5, 199, 0.05) + steady(200, 300, 0.05))
    figures = moment_figures(receipts, KILL, MOMENTS, emitted_at=0.0)
    assert figures["steady_p99"] == pytest.approx(0.05)
    assert figures["max_latency"] == pytest.approx(16.0)  # emitted at 99, received at 115
    assert figures["caught_up_after"] == pytest.approx(15.0)


def test_a_moment_nothing_noticed_has_no_catch_up() -> None:
    receipts = steady(0, 300, 0.05)
    figures = moment_figures(receipts, START, MOMENTS, emitted_at=0.0)
    assert figures["max_latency"] == pytest.approx(0.05)
    assert figures["caught_up_after"] == 0.0


def test_events_around_the_next_moment_are_not_counted_for_this_one() -> None:
    receipts = [*steady(0, 199, 0.05), (201.0, 230.0)]
    figures = moment_figures(receipts, KILL, MOMENTS, emitted_at=0.0)
    assert figures["max_latency"] == pytest.approx(0.05)
    later = moment_figures(receipts, START, MOMENTS, emitted_at=0.0)
    assert later["max_latency"] == pytest.approx(29.0)
    assert later["caught_up_after"] == pytest.approx(30.0)


def test_the_timeline_gives_each_bucket_of_emit_time_its_p99() -> None:
    receipts = [*steady(0, 10, 0.05), *steady(10, 20, 2.0)]
    assert timeline(receipts, 0.0, 10.0) == [(0.0, pytest.approx(0.05)),
                                             (10.0, pytest.approx(2.0))]
