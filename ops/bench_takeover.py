"""``auditrelay bench takeover``: what a worker joining, and one killed, cost a running pipeline.

The set-up of ``bench pipeline`` (its fresh topic prefix, destinations, lean receivers
and bench producer; :mod:`auditrelay.ops.bench_pipeline`), with ``--workers N``
identical workers (each in every group) and the producer emitting at a fixed rate.
A third of the way through the emission one worker is killed with SIGKILL (no
goodbye: its groups notice when its session times out); at two thirds a new worker
starts. For each of the two moments the command reports:

- how long the router's and the delivery's consumer groups took to be stable again
  with the new member count (polled every 0.2 s with the Admin API);
- the largest emit-to-receipt latency of the events emitted from 5 s before it on,
  against the steady p99 before that (how long the partitions that moved were not served);
- when the last event delayed by it arrived, after the moment;

and, over the run, the duplicates (copies received twice: the work the killed worker
had done and not committed yet), and that every event arrived.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from auditrelay.ops.bench_pipeline import (
    _bench_settings,
    _emitter,
    _get,
    _prepare,
    _process,
    _topics_deleted,
    _wait_line,
    _warm_up,
    _worker_argv,
    _worker_env,
    _Workers,
)
from auditrelay.ops.bench_receiver import percentile
from auditrelay.schemas.settings import Settings

__all__ = ["Moment", "moment_figures", "takeover", "timeline"]

_SETTLE_TIMEOUT = 120.0
_ARRIVAL_TIMEOUT = 180.0
#: Events emitted this long before a moment can still be in the work it interrupts.
_BEFORE = 5.0


@dataclass
class Moment:
    """A worker killed or started: when, and when its groups were stable again."""

    what: str
    at: float
    stable_after: float | None = None


@click.command("takeover")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(2, 4),
              help="Workers at the start; one is killed, then one started.")
@click.option("--events", default=100_000, show_default=True,
              type=click.IntRange(3_000, 2_000_000))
@click.option("--rate", default=2_000.0, show_default=True, type=click.FloatRange(100, 100_000),
              help="Events per second the producer emits.")
@click.option("--destinations", default=10, show_default=True, type=click.IntRange(1, 100),
              help="Loopback receivers, one destination (and workspace) each.")
@click.pass_obj
def takeover(settings: Settings, workers: int, events: int, rate: float,
             destinations: int) -> None:
    """Rebalance time, stall and duplicates when a worker is killed and when one joins."""
    from auditrelay.ops import kafka_local

    if not kafka_local.broker_answers(settings.kafka_bootstrap):
        raise click.ClickException(f"no broker answers at {settings.kafka_bootstrap}; start "
                                   "it with `auditrelay kafka up`")
    prefix = f"bench.{uuid.uuid4().hex[:10]}."
    with tempfile.TemporaryDirectory(prefix="bench-takeover-") as folder, \
            _topics_deleted(settings, prefix):
        bench = _bench_settings(settings, prefix, Path(folder))
        report, receipts, moments, emitted_at = _run(
            bench, Path(folder), workers=workers, events=events, rate=rate,
            count=destinations)
    click.echo(f"takeover: {events} events at {rate:.0f}/s into {destinations} destination(s), "
               f"{workers} workers, then one killed (SIGKILL), then one started; "
               f"session timeout {settings.consumer_session_timeout_seconds:.0f} s")
    for moment in moments:
        _print_moment(moment, moment_figures(receipts, moment.at, moments, emitted_at))
    click.echo("  p99 latency by 5 s of emit time (s after the first emit: p99 s): " + ", ".join(
        f"{start:.0f}: {p99:.2f}" for start, p99 in timeline(receipts, emitted_at, 5.0)))
    click.echo(f"  arrived: {report['unique']} of {events} events, "
               f"{report['duplicates']} duplicate copies")
    click.echo(f"  topics and groups of {prefix} deleted")
    if report["unique"] < events:
        raise click.ClickException(f"only {report['unique']} of {events} events arrived")


def moment_figures(receipts: list[tuple[float, float]], at: float, moments: list[Moment],
                   emitted_at: float) -> dict[str, float]:
    """Around the moment ``at``: the steady p99 latency before the first moment (of the
    events emitted up to ``_BEFORE`` seconds before it: later ones may be held by it), the
    largest latency of the events emitted from ``_BEFORE`` seconds before ``at`` to the
    next moment, and how long after ``at`` the last of those late beyond twice that p99
    (and 1 s) arrived. ``receipts`` are (emit time, receipt time) pairs."""
    first = min(m.at for m in moments)
    steady = sorted(got - sent for sent, got in receipts
                    if emitted_at <= sent < first - _BEFORE)
    p99 = percentile(steady, 0.99) if steady else 0.0
    later = [m.at for m in moments if m.at > at]
    until = min(later) if later else float("inf")
    around = [(sent, got) for sent, got in receipts if at - _BEFORE <= sent < until]
    late = max(2 * p99, 1.0)
    # Receipts before the moment belong to an earlier one (a catch-up still going on).
    delayed = [got for sent, got in around if got - sent > late and got >= at]
    return {"steady_p99": p99,
            "max_latency": max((got - sent for sent, got in around), default=0.0),
            "caught_up_after": (max(delayed) - at) if delayed else 0.0}


def timeline(receipts: list[tuple[float, float]], emitted_at: float,
             step: float) -> list[tuple[float, float]]:
    """(seconds after ``emitted_at``, p99 latency) per ``step`` seconds of emit time."""
    buckets: dict[int, list[float]] = {}
    for sent, got in receipts:
        buckets.setdefault(int((sent - emitted_at) // step), []).append(got - sent)
    return [(index * step, percentile(sorted(latencies), 0.99))
            for index, latencies in sorted(buckets.items())]


def _print_moment(moment: Moment, figures: dict[str, float]) -> None:
    stable = ("not stable within 120 s" if moment.stable_after is None
              else f"groups stable again after {moment.stable_after:.1f} s")
    click.echo(f"  {moment.what}: {stable}; steady p99 before {figures['steady_p99'] * 1000:.0f} "
               f"ms, largest latency around it {figures['max_latency']:.2f} s, the last "
               f"delayed event arrived {figures['caught_up_after']:.1f} s after it")


def _run(settings: Settings, folder: Path, *, workers: int, events: int, rate: float,
         count: int) -> tuple[dict[str, Any], list[tuple[float, float]], list[Moment], float]:
    dests = _prepare(settings, count, workers + 1, "webhook")
    control = f"http://127.0.0.1:{dests[0].port}"
    with contextlib.ExitStack() as stack:
        receiver = stack.enter_context(_process(
            [sys.executable, "-m", "auditrelay.ops.bench_receiver",
             *(str(d.port) for d in dests)], folder / "receiver.log", os.environ.copy()))
        _wait_line(receiver, folder / "receiver.log", "ready", 30.0)

        def start(n: int) -> Any:
            return stack.enter_context(_process(
                _worker_argv(None), folder / f"worker{n}.log", _worker_env(settings, n)))

        fleet = _Workers([start(n) for n in range(workers)],
                         [folder / f"worker{n}.log" for n in range(workers + 1)])
        fleet.wait_groups(settings)
        with _emitter(settings, dests, 500) as emit:
            _warm_up(emit, dests, control, fleet)
            emitted_at = time.time()
            producing = threading.Thread(target=emit.run, args=(events, rate), daemon=True)
            producing.start()
            moments = _disturb(settings, fleet, start, workers, events / rate, emitted_at)
            producing.join()
        report = _wait_for(control, events, emitted_at)
        pairs = _get(f"{control}/receipts?since={emitted_at:.6f}&prefix=/")
    receipts = [(sent, got) for per_path in pairs.values() for sent, got in per_path]
    return report, receipts, moments, emitted_at


def _disturb(settings: Settings, fleet: _Workers, start: Any, workers: int,
             seconds: float, emitted_at: float) -> list[Moment]:
    """Kill worker 0 at a third of the emission, start a new one at two thirds."""
    _sleep_until(emitted_at + seconds / 3)
    fleet.procs[0].send_signal(signal.SIGKILL)
    killed = Moment("worker killed", time.time())
    killed.stable_after = _stable_after(settings, workers - 1, killed.at)
    _sleep_until(emitted_at + 2 * seconds / 3)
    joined = Moment("worker started", time.time())
    fleet.procs.append(start(workers))
    joined.stable_after = _stable_after(settings, workers, joined.at)
    return [killed, joined]


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def _stable_after(settings: Settings, members: int, since: float) -> float | None:
    """Seconds from ``since`` until the router's and delivery's groups are stable with
    ``members`` members each (None if not within the timeout)."""
    from auditrelay.kafka.admin import admin_client

    admin = admin_client(settings.kafka_bootstrap)
    groups = [settings.topics.router_group, settings.topics.delivery_group]
    while time.time() - since < _SETTLE_TIMEOUT:
        try:
            described = [f.result(timeout=10)
                         for f in admin.describe_consumer_groups(groups).values()]
        except Exception:  # a group in the middle of a rebalance may not describe
            described = []
        if described and all(len(d.members) == members and str(d.state).endswith("STABLE")
                             for d in described):
            return time.time() - since
        time.sleep(0.2)
    return None


def _wait_for(control: str, events: int, emitted_at: float) -> dict[str, Any]:
    """The receivers' report once every event arrived (or the timeout passed)."""
    deadline = time.monotonic() + _ARRIVAL_TIMEOUT
    report: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if _get(f"{control}/stats")["events"] >= events:
            report = _get(f"{control}/report?since={emitted_at:.6f}")
            if report["unique"] >= events:
                return report
        time.sleep(0.5)
    return report or _get(f"{control}/report?since={emitted_at:.6f}")

