"""``auditrelay bench destinations``: the delivery stage with thousands of destinations.

Measures whatever topic layout the code under test has the same way (issue #19 measured
the old topic per destination and the keyed deliveries topic with it). A run, under a fresh
topic prefix ``bench.<random>.`` and a temporary folder:

1. the contract's topics (``auditrelay.ops.topics.ensure_topics``) and a fresh database;
   the API starts in a process of its own (as ``bench create`` does) and creates
   ``--workspaces`` Enterprise workspaces x ``--per-workspace`` destinations from 8
   concurrent clients; then it waits until the outbox drained and stops;
2. every destination points at one loopback receiver process (``bench_receiver``),
   told apart by URL path: healthy ones at ``/d/<n>``, ``--slow`` ones on a second
   port that answers after 14 s (``/s/<n>``), ``--refusing`` ones at a port where
   nothing listens (``/r/<n>``);
3. ``--events-per-workspace`` events per workspace are produced, then one worker
   (``auditrelay worker``) starts, or ``--workers N`` alike, all at once (each runs
   every stage and joins every group: the horizontal scaling of docs/scaling.md);
   from their start: the first delivery, the time until every healthy destination
   has all its events, and how many had them within ``--deadline`` seconds (the run
   stops waiting then and reports what it has);
4. ``--burst``: one event per workspace, and the time from the produce to the last
   receipt; ``--rate R --duration S``: a steady phase, emit -> receipt percentiles
   overall, of the median and of the slowest destination;
   with ``--keep-logs DIR`` the steady phase's receipts, batches and attempts are also
   written to ``DIR/receipts.json`` (docs/scaling.md: where the tail's time went);
5. each worker's peak RSS (``VmHWM``), CPU seconds, log size, and the failed attempts
   (``audit.delivery-attempts``), healthy destinations apart from slow/refusing ones;
   then everything stops and every topic of the prefix is deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

# Both benches' machinery: the API and its clients (create), the worker and the
# receiver processes, CPU and memory readings, topic cleanup (pipeline).
from auditrelay.ops.bench_create import (
    Job,
    _api_process,
    _bench_settings,
    _drain,
    _post_all,
    _span,
    _wait_ready,
    bench_database,
)
from auditrelay.ops.bench_pipeline import (
    Destination,
    _cpu_seconds,
    _Emitter,
    _emitter,
    _free_port,
    _get,
    _peak_rss_kib,
    _process,
    _records,
    _topics_deleted,
    _wait_line,
    _worker_argv,
    _worker_env,
    _Workers,
)
from auditrelay.schemas.settings import Settings

__all__ = ["destinations"]

_CLIENTS = 8
#: How long a slow destination's receiver takes to answer (the attempt deadline is 15 s).
_SLOW_SECONDS = 14.0
_POLL_SECONDS = 0.5
_HEALTHY, _SLOW, _REFUSING = "/d/", "/s/", "/r/"


@dataclass
class Fleet:
    """The run's destinations: URL path by destination id, and workspace index by path."""

    path_of: dict[str, str] = field(default_factory=dict)
    workspace_of: dict[str, int] = field(default_factory=dict)
    workspaces: list[str] = field(default_factory=list)

    def kind(self, destination_id: str) -> str:
        return self.path_of.get(destination_id, _HEALTHY)[:3]

    def healthy(self) -> list[str]:
        return [p for p in self.workspace_of if p.startswith(_HEALTHY)]


def _figure(label: str, value: str) -> None:
    """One line of the report, printed as soon as it is measured."""
    click.echo(f"  {label}: {value}")


@click.command("destinations")
@click.option("--workspaces", default=2000, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--per-workspace", default=5, show_default=True, type=click.IntRange(1, 100),
              help="Destinations in each workspace.")
@click.option("--events-per-workspace", default=3, show_default=True,
              type=click.IntRange(1, 1000))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 4),
              help="Identical workers, each with every stage (they share the partitions).")
@click.option("--deadline", default=300.0, show_default=True, type=click.FloatRange(1, 7200),
              help="Seconds each phase waits for its deliveries before reporting what it has.")
@click.option("--slow", default=0, show_default=True, type=click.IntRange(0),
              help=f"Destinations whose receiver answers after {_SLOW_SECONDS:.0f} s.")
@click.option("--refusing", default=0, show_default=True, type=click.IntRange(0),
              help="Destinations at a loopback port where nothing listens.")
@click.option("--burst", is_flag=True,
              help="Then one event per workspace: time from the produce to the last receipt.")
@click.option("--rate", default=0.0, show_default=True, type=click.FloatRange(0, 100_000),
              help="Then a steady phase: events/s over all workspaces (with --duration).")
@click.option("--duration", default=0.0, show_default=True, type=click.FloatRange(0, 3600))
@click.option("--db", "db_kind", type=click.Choice(["sqlite", "postgresql"]), default="sqlite",
              show_default=True, help="A fresh SQLite file, or a temporary database on the "
              "local PostgreSQL (`auditrelay postgres up`), dropped afterwards.")
@click.option("--bootstrap", default=None, help="Kafka bootstrap [default: the settings'].")
@click.option("--keep-logs", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Copy the worker's, the API's and the receiver's logs into this folder.")
@click.pass_obj
def destinations(settings: Settings, workspaces: int, per_workspace: int,
                 events_per_workspace: int, workers: int, deadline: float, slow: int,
                 refusing: int, burst: bool, rate: float, duration: float, db_kind: str,
                 bootstrap: str | None, keep_logs: Path | None) -> None:
    """Deliveries to thousands of destinations through the worker(s): times, memory, failures."""
    if slow + refusing > workspaces * per_workspace:
        raise click.UsageError("--slow + --refusing exceed the destinations")
    run_id = uuid.uuid4().hex[:12]
    base = settings.model_copy(update={"kafka_bootstrap": bootstrap or settings.kafka_bootstrap})
    click.echo(f"bench destinations: {workspaces} workspaces x {per_workspace} destinations "
               f"= {workspaces * per_workspace} ({slow} slow, {refusing} refusing), "
               f"{events_per_workspace} events per workspace, deadline {deadline:.0f} s, "
               f"{db_kind} database" + (f", {workers} workers" if workers > 1 else ""))
    with tempfile.TemporaryDirectory(prefix="bench-destinations-") as tmp, \
            bench_database(base, db_kind, run_id, purpose="destinations") as url:
        run = _bench_settings(base, f"bench.{run_id}.", Path(tmp), url)
        try:
            with _topics_deleted(run, run.topic_prefix):
                _run(run, Path(tmp), workspaces=workspaces, per_workspace=per_workspace,
                     events=events_per_workspace, workers=workers, deadline=deadline, slow=slow,
                     refusing=refusing, burst=burst, rate=rate, duration=duration,
                     dump=keep_logs)
        finally:
            if keep_logs is not None:
                keep_logs.mkdir(parents=True, exist_ok=True)
                for log in Path(tmp).glob("*.log"):
                    shutil.copy(log, keep_logs / log.name)
        click.echo(f"  topics of {run.topic_prefix} deleted")


def _run(settings: Settings, folder: Path, *, workspaces: int, per_workspace: int,
         events: int, workers: int, deadline: float, slow: int, refusing: int, burst: bool,
         rate: float, duration: float, dump: Path | None = None) -> None:
    from auditrelay.ops.topics import ensure_topics

    ensure_topics(settings)
    port, slow_port, dead_port = _free_port(), _free_port(), _free_port()
    with contextlib.ExitStack() as stack:
        receiver = stack.enter_context(_process(
            [sys.executable, "-m", "auditrelay.ops.bench_receiver", str(port),
             f"{slow_port}:{_SLOW_SECONDS}"], folder / "receiver.log", os.environ.copy()))
        _wait_line(receiver, folder / "receiver.log", "ready", 30.0)
        fleet = _create(settings, folder, workspaces=workspaces,
                        per_workspace=per_workspace, slow=slow, refusing=refusing,
                        urls=(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{slow_port}",
                              f"http://127.0.0.1:{dead_port}"))
        control = f"http://127.0.0.1:{port}"
        dests = [Destination(ws, "", port) for ws in fleet.workspaces]
        with _emitter(settings, dests, 500) as emit:
            emit.run(events * workspaces, 0.0)  # round-robin: `events` per workspace
            watch = _Watch([stack.enter_context(_worker(settings, folder, n))
                            for n in range(workers)], folder)
            complete = _first_phase(control, fleet, watch, events=events,
                                    deadline=deadline)
            if (burst or rate) and not complete:
                _figure("burst and steady phases", "skipped: the first phase did not "
                            "complete")
            else:
                if burst:
                    _burst(control, fleet, emit, watch, deadline=deadline)
                if rate and duration:
                    _steady(settings, control, fleet, emit, watch, rate=rate,
                            duration=duration, deadline=deadline, dump=dump)
            watch.sample()
            _figure("worker" if workers == 1 else "workers", watch.figures())
            receiver_cpu = _cpu_seconds(receiver.pid)
        _failed_attempts(settings, fleet)
    _figure("receiver process", f"{receiver_cpu:,.1f} s CPU over the run")
    _machine_line(settings)


# -- phase 0: the destinations, through the API ----------------------------------------------


def _create(settings: Settings, folder: Path, *, workspaces: int,
            per_workspace: int, slow: int, refusing: int, urls: tuple[str, str, str]) -> Fleet:
    """Workspaces and destinations through a real API process, then its outbox drained."""
    port = _free_port()
    log_path = folder / "api.log"
    fleet = Fleet()
    with _api_process(settings, port, log_path) as proc:
        _wait_ready(proc, port, log_path)
        admin = settings.admin_token.get_secret_value() if settings.admin_token else ""
        made = _post_all([port], [Job("/v1/workspaces", admin,
                                    {"name": f"bench {n}", "plan": "enterprise"})
                                for n in range(workspaces)], _CLIENTS)
        tokens = [(r["id"], r["token"]) for r in made.responses]
        fleet.workspaces = [ws for ws, _ in tokens]
        total = workspaces * per_workspace
        jobs, paths = [], []
        for k in range(total):
            ws, token = tokens[k % workspaces]
            # The last ones are the unhealthy: slow, then refusing.
            group, url = ((_REFUSING, urls[2]) if k >= total - refusing else
                          (_SLOW, urls[1]) if k >= total - refusing - slow else
                          (_HEALTHY, urls[0]))
            paths.append(f"{group}{k}")
            fleet.workspace_of[paths[-1]] = k % workspaces
            jobs.append(Job(f"/v1/workspaces/{ws}/destinations", token, {
                "name": f"bench {k}", "url": f"{url}{paths[-1]}", "event_types": ["*"]}))
        done = _post_all([port], jobs, _CLIENTS)
        # Answers come back in completion order: match them to their paths by name.
        for answer in done.responses:
            fleet.path_of[answer["id"]] = paths[int(answer["name"].split()[-1])]
        # No destination topics expected: whatever the layout, an empty outbox is the sign.
        drained = _drain(settings, [proc], log_path)
    _figure("created", f"{workspaces} workspaces at {workspaces / _span(made):,.0f}/s, "
                f"{total} destinations at {total / _span(done):,.0f}/s, outbox drained "
                f"{drained:.1f} s after")
    return fleet


# -- the worker -------------------------------------------------------------------------------


@contextlib.contextmanager
def _worker(settings: Settings, folder: Path, index: int) -> Iterator[subprocess.Popen[bytes]]:
    (settings.var_dir / f"worker{index}").mkdir(parents=True, exist_ok=True)
    env = _worker_env(settings, index)
    env.pop("AUDITRELAY_LOG_LEVEL")  # the default level: the log size is a figure
    with _process(_worker_argv(None), folder / f"worker{index}.log", env) as proc:
        yield proc


class _Watch:
    """The workers (``bench pipeline``'s ``_Workers``): alive?, each one's peak RSS
    (sampled), and the clock from their start."""

    def __init__(self, procs: list[subprocess.Popen[bytes]], folder: Path) -> None:
        self.workers = _Workers(procs, [folder / f"worker{n}.log" for n in range(len(procs))])
        self.started = time.time()
        self.rss_kib = [0] * len(procs)

    def sample(self) -> None:
        if self.workers.died():
            raise click.ClickException("a worker died" + self.workers.tail())
        for n, proc in enumerate(self.workers.procs):
            with contextlib.suppress(OSError):
                self.rss_kib[n] = max(self.rss_kib[n], _peak_rss_kib(proc.pid))

    def figures(self) -> str:
        """Peak RSS, CPU seconds and log size, of each worker in turn (`a + b`)."""
        rss = " + ".join(f"{kib / 1024:,.0f}" for kib in self.rss_kib)
        cpu = " + ".join(f"{_cpu_seconds(p.pid):,.1f}" for p in self.workers.procs)
        logs = " + ".join(f"{log.stat().st_size:,}" for log in self.workers.logs)
        return f"peak RSS {rss} MiB, {cpu} s CPU, log {logs} bytes"


def _wait(control: str, watch: _Watch, prefix: str, least: int, paths: int,
          until: float, events: int = 0, after: float = 0.0) -> dict[str, Any]:
    """Poll the receiver until ``paths`` paths under ``prefix`` have ``least`` events each
    (and, if given, ``events`` in all), or ``until`` (a ``time.time()``) has passed; events
    received at ``after`` or later if given."""
    while True:
        watch.sample()
        got = _get(f"{control}/complete?prefix={prefix}&min={least}&after={after:.6f}")
        if (got["complete"] >= paths and got["events"] >= events) or time.time() > until:
            return got
        time.sleep(_POLL_SECONDS)


def _first_phase(control: str, fleet: Fleet, watch: _Watch, *,
                 events: int, deadline: float) -> bool:
    healthy = len(fleet.healthy())
    got = _wait(control, watch, _HEALTHY, events, healthy, watch.started + deadline)
    first = _get(f"{control}/complete?prefix=/&min=1")["first"]
    _figure("first delivery", "none" if first is None else
                f"{first - watch.started:.1f} s after the worker's start")
    everything: bool = got["complete"] >= healthy
    _figure("all healthy destinations complete",
                f"{got['done_at'] - watch.started:.1f} s after the worker's start"
                if everything and got["done_at"] else f"no (deadline {deadline:.0f} s)")
    _figure("healthy destinations with all their events",
                f"{got['complete']} of {healthy} within {deadline:.0f} s "
                f"({got['events']:,} of {healthy * events:,} events arrived)")
    for prefix, name in ((_SLOW, "slow"), (_REFUSING, "refusing")):
        count = sum(1 for p in fleet.workspace_of if p.startswith(prefix))
        if count:
            other = _get(f"{control}/complete?prefix={prefix}&min={events}")
            _figure(f"{name} destinations with all their events",
                        f"{other['complete']} of {count}")
    return everything


def _burst(control: str, fleet: Fleet, emit: _Emitter, watch: _Watch, *,
           deadline: float) -> None:
    healthy = len(fleet.healthy())
    produced = time.time()
    emit.one_each()
    got = _wait(control, watch, _HEALTHY, 1, healthy, produced + deadline, after=produced)
    if got["complete"] >= healthy and got["done_at"]:
        _figure("burst (one event per workspace)", f"last receipt "
                    f"{got['done_at'] - produced:.1f} s after the produce ({healthy} healthy "
                    f"destinations)")
    else:
        _figure("burst (one event per workspace)", f"{got['complete']} of {healthy} "
                    f"healthy destinations within {deadline:.0f} s")


def _steady(settings: Settings, control: str, fleet: Fleet, emit: _Emitter, watch: _Watch, *,
            rate: float, duration: float, deadline: float, dump: Path | None = None) -> None:
    from auditrelay.ops.bench_receiver import percentile

    count = max(1, round(rate * duration))
    workspaces = len(fleet.workspaces)
    per_workspace = Counter(i % workspaces for i in range(count))
    healthy = fleet.healthy()
    expected = sum(per_workspace[fleet.workspace_of[p]] for p in healthy)
    emitted_at, _ = emit.run(count, rate)
    _wait(control, watch, _HEALTHY, 0, 0, emitted_at + duration + deadline, events=expected,
          after=emitted_at)
    report = _get(f"{control}/paths?since={emitted_at:.6f}&prefix=/")
    lat = report["latency"]
    arrived = sum(n for n, _ in report["paths"].values())
    _figure(f"steady {rate:,.0f} events/s for {duration:.0f} s",
                f"emit -> receipt p50 {lat['p50']:.2f} s, p99 {lat['p99']:.2f} s, max "
                f"{lat['max']:.2f} s ({arrived:,} deliveries of events)")
    p99s = sorted(p99 for n, p99 in report["paths"].values() if n)
    if p99s:
        _figure("steady: p99 per destination", f"median destination "
                    f"{percentile(p99s, 0.5):.2f} s, slowest {p99s[-1]:.2f} s")
    if len(healthy) < len(fleet.workspace_of):
        mine = _get(f"{control}/paths?since={emitted_at:.6f}&prefix={_HEALTHY}")
        got = sum(n for n, _ in mine["paths"].values())
        _figure("steady: healthy destinations", f"p99 {mine['latency']['p99']:.2f} s "
                    f"({got:,} of {expected:,} event deliveries)")
    if dump is not None:
        _dump_receipts(settings, control, fleet, watch, emitted_at, dump)


def _dump_receipts(settings: Settings, control: str, fleet: Fleet, watch: _Watch,
                   emitted_at: float, folder: Path) -> None:
    """``receipts.json``: the steady phase's [emit, receipt] per event and destination,
    each destination's path and workspace, and where each batch was when: produced to
    ``audit.deliveries`` (its Kafka timestamp) and attempted (``audit.delivery-attempts``);
    for finding what the late ones share, and which stage held them."""
    from auditrelay.ops.bench_receiver import _ID

    folder.mkdir(parents=True, exist_ok=True)
    since = emitted_at * 1000
    batches = [[key.decode(), ts / 1000, headers.get("ar_batch_id", b"").decode(),
                [i.decode() for i in _ID.findall(value)]]
               for ts, key, value, headers in _records(settings.kafka_bootstrap,
                                                       settings.topics.deliveries)
               if ts >= since]
    attempts = []
    for ts, _, value, _ in _records(settings.kafka_bootstrap,
                                    settings.topics.delivery_attempts):
        if value and ts >= since:
            record = json.loads(value)
            attempts.append([record["destination_id"], record["batch_id"], record["at"],
                             record["latency_ms"], record["outcome"], record["attempt"]])
    data = {
        "batches": batches, "attempts": attempts,
        "worker_started": watch.started, "emitted_at": emitted_at,
        "destinations": {dest: {"path": path, "workspace": fleet.workspace_of[path]}
                         for dest, path in fleet.path_of.items()},
        "receipts": _get(f"{control}/receipts?since={emitted_at:.6f}&prefix=/"),
    }
    (folder / "receipts.json").write_text(json.dumps(data))


# -- the failed attempts, from audit.delivery-attempts ----------------------------------------


def _failed_attempts(settings: Settings, fleet: Fleet) -> None:
    failed: Counter[str] = Counter()
    attempts = 0
    for _, _, value, _ in _records(settings.kafka_bootstrap, settings.topics.delivery_attempts):
        if not value:
            continue
        attempts += 1
        record = json.loads(value)
        if record.get("outcome") != "delivered":
            failed[fleet.kind(record.get("destination_id", ""))] += 1
    _figure("failed delivery attempts", f"healthy {failed[_HEALTHY]}, slow "
                f"{failed[_SLOW]}, refusing {failed[_REFUSING]} (of {attempts:,} attempts)")


def _machine_line(settings: Settings) -> None:
    mem = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal:")), 0)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    click.echo(f"  machine: {os.cpu_count()} cores, {mem / 1024 ** 2:.0f} GiB, load {load}, "
               f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M %Z')}, "
               f"broker {settings.kafka_bootstrap}")
