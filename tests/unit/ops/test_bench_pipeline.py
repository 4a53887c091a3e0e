"""``bench pipeline``: ``--check`` (a run's figures against issue #14's targets) and
``--backlog`` (workers stopped while events are emitted). No broker."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from auditrelay.ops.bench_pipeline import (
    Figures,
    _Workers,
    destination_spread,
    missed_targets,
    recommended_deployment,
    runs_archive,
    target_lines,
)

GOOD = Figures(events=30_000, unique=30_000, rate=1000.0, destinations=1, window_seconds=1.0,
               p99_ms=120.0, events_per_second=990.0, peak_rss_mib=150.0,
               cpu_us_per_event=200.0)


def test_a_run_within_its_targets_misses_none() -> None:
    assert missed_targets(GOOD) == []


@pytest.mark.parametrize(("rate", "p99", "missed"), [
    (1000.0, 150.0, False), (1000.0, 151.0, True),
    (5000.0, 100.0, False), (5000.0, 101.0, True),
    (20000.0, 101.0, True),
    (2000.0, 900.0, False),  # the issue names no target for this rate
])
def test_one_destination_latency_targets_by_rate(rate: float, p99: float, missed: bool) -> None:
    result = missed_targets(replace(GOOD, rate=rate, p99_ms=p99))
    assert bool(result) is missed
    if missed:
        assert result == [f"p99 {p99:,.0f} ms > {150 if rate == 1000 else 100} ms"]


def test_ten_destinations_get_the_window_plus_150_ms() -> None:
    ten = replace(GOOD, destinations=10, window_seconds=1.0)
    assert missed_targets(replace(ten, p99_ms=1150.0)) == []
    assert missed_targets(replace(ten, p99_ms=1151.0)) == ["p99 1,151 ms > 1,150 ms"]
    assert missed_targets(replace(ten, window_seconds=2.0, p99_ms=2100.0)) == []


def test_many_destinations_latency_and_starvation() -> None:
    many = replace(GOOD, destinations=1000, rate=10_000.0, p99_ms=1400.0,
                   destination_p99_ms=(1000.0, 1900.0))
    assert missed_targets(many) == []
    starved = replace(many, destination_p99_ms=(1000.0, 2100.0))
    assert missed_targets(starved) == [
        "slowest destination's p99 2,100 ms > 2 x the median's 1,000 ms"]
    assert missed_targets(replace(many, p99_ms=1600.0)) == ["p99 1,600 ms > 1,500 ms"]


def test_throughput_is_checked_as_fast_as_possible_with_one_destination() -> None:
    fast = replace(GOOD, rate=0.0, events=100_000, unique=100_000, p99_ms=20_000.0)
    assert missed_targets(replace(fast, events_per_second=40_000.0)) == []
    assert missed_targets(replace(fast, events_per_second=12_000.0)) == [
        "12,000 events/s < 40,000 events/s"]
    # Ten destinations as fast as possible: no throughput target.
    assert missed_targets(replace(fast, destinations=10, events_per_second=12_000.0)) == []
    # A backlog run, or another deployment than the recommended one: shown, not checked.
    other = replace(fast, events_per_second=12_000.0, throughput_shape=False)
    assert missed_targets(other) == []
    assert any(line.startswith("12,000 events/s (not checked: ") for line in target_lines(other))


@pytest.mark.parametrize(("stages", "recommended"), [
    (["router,retention", "delivery", "archive"], True),
    (["router", "delivery", "archive,retention"], True),
    (["delivery", "archive", "router"], True),
    ([None], False),
    (["router,delivery,retention", "archive"], False),
    (["router,retention", "delivery", "archive", "delivery"], False),
])
def test_the_recommended_deployment_has_each_main_stage_alone(
        stages: list[str | None], recommended: bool) -> None:
    assert recommended_deployment(stages) is recommended


def test_every_run_must_deliver_everything_within_the_rss_target() -> None:
    bad = replace(GOOD, unique=29_990, peak_rss_mib=301.0, p99_ms=151.0)
    assert missed_targets(bad) == ["only 29990 of 30000 events arrived",
                                   "peak RSS 301 MiB > 300 MiB", "p99 151 ms > 150 ms"]


def test_every_event_must_be_archived_when_a_worker_runs_the_archive() -> None:
    assert missed_targets(replace(GOOD, archived=30_000)) == []
    assert missed_targets(replace(GOOD, archived=0)) == ["only 0 of 30000 events archived"]
    assert target_lines(replace(GOOD, archived=12))[0] == (
        "events arrived 30000 of 30000, archived 12")


@pytest.mark.parametrize(("stages", "archives"), [
    (None, True), ("archive", True), ("router, archive", True), ("router,retention", False),
    ("delivery", False),
])
def test_which_workers_run_the_archive(stages: str | None, archives: bool) -> None:
    assert runs_archive(stages) is archives


def test_target_lines_name_the_figures_and_goals() -> None:
    lines = target_lines(replace(GOOD, rate=0.0, events_per_second=12_000.0))
    assert "12,000 events/s (target >= 40,000, goal >= 55,000)" in lines
    assert "p99 120 ms (no latency target for this shape)" in lines
    assert lines[-1] == "200 us CPU/event (goal <= 25; not checked)"


def test_destination_spread_is_median_and_max() -> None:
    assert destination_spread([]) is None
    assert destination_spread([3.0, 1.0, 2.0]) == (2.0, 3.0)
    assert destination_spread([4.0, 1.0, 2.0, 3.0]) == (2.5, 4.0)


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _settles_in(pid: int, states: set[str], deadline: float = 5.0) -> str:
    """The process's state once it is one of ``states`` (a signal lands a moment after
    it was sent), or the last seen at the deadline."""
    end = time.monotonic() + deadline
    state = _state(pid)
    while state not in states and time.monotonic() < end:
        time.sleep(0.01)
        state = _state(pid)
    return state


def test_backlog_stops_the_workers_while_inside_and_lets_them_go_on_after() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        workers = _Workers([proc], [])
        with workers.stopped():
            assert _settles_in(proc.pid, {"T"}) == "T"
        assert _settles_in(proc.pid, {"S", "R"}) in {"S", "R"}
    finally:
        proc.kill()
        proc.wait()
