"""``auditrelay bench create``: destinations created per second through the management API.

A run, under a fresh topic prefix ``bench.<random>.`` and a temporary folder:

1. the contract's topics, and a database at the head revision: a fresh SQLite file
   by default, a temporary database on the local PostgreSQL (``--db postgresql``), or
   the one at ``--database-url`` (used as it is, upgraded);
2. the API starts as ``auditrelay api`` does, in a process of its own on loopback, with
   an admin token of the run's, loopback allowed as a destination (``allow_private_cidrs``)
   and its outbox publisher on the broker of ``--bootstrap``; ``--api-processes`` starts
   several, a port each, as replicas behind a load balancer run;
3. ``--clients`` HTTP clients create ``--workspaces`` workspaces with the admin token,
   then ``--per-workspace`` destinations in each with the workspace's own token, the
   workspaces taken in turn, client ``n`` talking to API process ``n`` modulo their
   number; every check of a creation runs (validation, SSRF check of
   the URL, quota, encryption, self-audit event, outbox entries in the transaction);
4. the clock stops at the last ``201``; then the outbox is watched until it is empty:
   every config record and self-audit event published (the drain time);
5. the API stops and every topic of the prefix is deleted.

Printed: destinations/s overall and for each successive thousand (a rate that falls
as the count grows means a per-create cost that grows with it), p50/p99 latency of a
create, and the drain time.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

# The pipeline bench's process helpers: one way to run, time and clean up after a child.
from auditrelay.ops.bench_pipeline import _cpu_seconds, _free_port, _process, _topics_deleted
from auditrelay.schemas.settings import Settings

__all__ = ["create"]

_READY_TIMEOUT = 60.0
_DRAIN_TIMEOUT = 900.0
#: Destinations per line of the per-thousand report.
_STEP = 1000


@dataclass(frozen=True)
class Job:
    """One POST: its path, its bearer token and its JSON body."""

    path: str
    token: str
    body: dict[str, Any]


@dataclass
class Timings:
    """When each request of a phase ended, and how long each took (seconds)."""

    ended: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)


@click.command("create")
@click.option("--workspaces", default=200, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--per-workspace", default=5, show_default=True, type=click.IntRange(1, 10_000),
              help="Destinations created in each workspace.")
@click.option("--clients", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Concurrent HTTP clients (one keep-alive connection each).")
@click.option("--api-processes", default=1, show_default=True, type=click.IntRange(1, 16),
              help="API processes (replicas, a port each) sharing the database.")
@click.option("--db", "db_kind", type=click.Choice(["sqlite", "postgresql"]), default="sqlite",
              show_default=True, help="A fresh SQLite file, or a temporary database on the "
              "local PostgreSQL (`auditrelay postgres up`), dropped afterwards.")
@click.option("--database-url", default=None,
              help="Use this database instead (upgraded to head, left in place).")
@click.option("--url", "target", default=None,
              help="The destinations' URL [default: http://127.0.0.1:<free port>/hook]; a "
              "host name here is resolved by the SSRF check of every create.")
@click.option("--bootstrap", default=None, help="Kafka bootstrap [default: the settings'].")
@click.pass_obj
def create(settings: Settings, workspaces: int, per_workspace: int, clients: int,
           api_processes: int, db_kind: str, database_url: str | None, target: str | None,
           bootstrap: str | None) -> None:
    """Destinations/s through the API's HTTP endpoint, and how long the outbox takes after."""
    run_id = uuid.uuid4().hex[:12]
    base = settings.model_copy(update={"kafka_bootstrap": bootstrap or settings.kafka_bootstrap})
    with tempfile.TemporaryDirectory(prefix="bench-create-") as tmp, \
            bench_database(base, db_kind, run_id, purpose="create", url=database_url) as url:
        run = _bench_settings(base, f"bench.{run_id}.", Path(tmp), url)
        with _topics_deleted(run, run.topic_prefix):
            _run(run, Path(tmp), workspaces=workspaces, per_workspace=per_workspace,
                 clients=clients, target=target or f"http://127.0.0.1:{_free_port()}/hook",
                 kind="custom" if database_url else db_kind, processes=api_processes)
        click.echo(f"  topics of {run.topic_prefix} deleted")


def _bench_settings(settings: Settings, prefix: str, folder: Path, url: str) -> Settings:
    from pydantic import SecretStr

    from auditrelay.wire.secrets import generate_key

    # model_copy does not validate: the values are given in their parsed types.
    return settings.model_copy(update={
        "topic_prefix": prefix, "var_dir": folder / "var", "database_url": url,
        "secret_key": SecretStr(generate_key()),
        "admin_token": SecretStr(secrets.token_urlsafe(32)),
        "allow_private_cidrs": (ipaddress.ip_network("127.0.0.0/8"),),
    })


@contextlib.contextmanager
def bench_database(settings: Settings, kind: str, run_id: str, *, purpose: str,
                   url: str | None = None) -> Iterator[str]:
    """A bench run's database URL, at the head revision: ``url`` as given (left in
    place), else a fresh SQLite file or a temporary database on the local PostgreSQL
    (`auditrelay postgres up`), either removed afterwards."""
    from auditrelay.store.engine import upgrade_database

    if url is not None:
        upgrade_database(url)
        yield url
        return
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix=f"bench-{purpose}-") as folder:
            url = f"sqlite:///{Path(folder) / 'bench.db'}"
            upgrade_database(url)
            yield url
        return
    from auditrelay.ops.postgres_local import LocalPostgres

    server = LocalPostgres.from_settings(settings)
    server.up()
    with server.temporary_database(f"bench_{purpose}_{run_id}") as url:
        upgrade_database(url)
        yield url


def _run(settings: Settings, folder: Path, *, workspaces: int, per_workspace: int,
         clients: int, target: str, kind: str, processes: int) -> None:
    from auditrelay.ops.topics import ensure_topics

    ensure_topics(settings)
    ports = [_free_port() for _ in range(processes)]
    logs = [folder / (f"api{n}.log" if n else "api.log") for n in range(processes)]
    with contextlib.ExitStack() as stack:
        procs = [stack.enter_context(_api_process(settings, port, log_path))
                 for port, log_path in zip(ports, logs, strict=True)]
        for proc, port, log_path in zip(procs, ports, logs, strict=True):
            _wait_ready(proc, port, log_path)
        admin = settings.admin_token.get_secret_value() if settings.admin_token else ""
        ws_jobs = [Job("/v1/workspaces", admin, {"name": f"bench {n}", "plan": "enterprise"})
                   for n in range(workspaces)]
        made = _post_all(ports, ws_jobs, clients)
        tokens = [(r["id"], r["token"]) for r in made.responses]
        jobs = [Job(f"/v1/workspaces/{ws}/destinations", token,
                    {"name": f"bench {n}", "url": target, "event_types": ["*"],
                     "headers": {"X-Bench-Run": settings.topic_prefix}})
                for n in range(per_workspace) for ws, token in tokens]
        cpu_before = sum(_cpu_seconds(proc.pid) for proc in procs)
        started = time.perf_counter()
        done = _post_all(ports, jobs, clients)
        cpu = sum(_cpu_seconds(proc.pid) for proc in procs) - cpu_before
        # Whichever process holds the outbox's lease publishes; any may fail the run.
        drained = _drain(settings, procs, logs[0])
    _report(done, started, drained, cpu, workspaces=workspaces, per_workspace=per_workspace,
            clients=clients, target=target, kind=kind, settings=settings,
            ws_rate=workspaces / _span(made), processes=processes)


def _span(timings: Timings) -> float:
    first = min(end - lat for end, lat in zip(timings.ended, timings.latencies, strict=True))
    return max(timings.ended) - first


def _post_all(ports: list[int], jobs: list[Job], clients: int) -> Timings:
    """POST every job, ``clients`` at a time, client ``n`` to ``ports[n % len(ports)]``;
    any answer but 201 ends the run."""
    timings = Timings()
    lock = threading.Lock()
    cursor = iter(jobs)
    errors: list[str] = []

    def client(port: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while not errors:
                with lock:
                    job = next(cursor, None)
                if job is None:
                    return
                body = json.dumps(job.body).encode()
                began = time.perf_counter()
                connection.request("POST", job.path, body, {
                    "Authorization": f"Bearer {job.token}",
                    "Content-Type": "application/json"})
                answer = connection.getresponse()
                payload = answer.read()
                ended = time.perf_counter()
                if answer.status != 201:
                    errors.append(f"POST {job.path}: {answer.status} {payload[:300]!r}")
                    return
                with lock:
                    timings.ended.append(ended)
                    timings.latencies.append(ended - began)
                    timings.responses.append(json.loads(payload))
        except OSError as exc:
            errors.append(f"client: {exc}")
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(ports[n % len(ports)],),
                                name=f"bench-client-{n}") for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise click.ClickException(errors[0])
    return timings


def _drain(settings: Settings, procs: list[Any], log_path: Path) -> float:
    """Seconds from now until the outbox is empty (an entry leaves it once the broker
    confirmed it)."""
    from sqlalchemy import func, select

    from auditrelay.store.db import OutboxEntry
    from auditrelay.store.engine import make_engine

    engine = make_engine(settings.database_url)
    count = select(func.count()).select_from(OutboxEntry)
    began = time.perf_counter()
    try:
        while True:
            with engine.connect() as connection:
                left = int(connection.scalar(count) or 0)
            if left == 0:
                return time.perf_counter() - began
            if any(proc.poll() is not None for proc in procs) \
                    or time.perf_counter() - began > _DRAIN_TIMEOUT:
                raise click.ClickException(
                    f"the outbox still holds {left} entries" + _tail(log_path))
            time.sleep(0.1)
    finally:
        engine.dispose()


def _report(done: Timings, started: float, drained: float, cpu: float, *, workspaces: int,
            per_workspace: int, clients: int, target: str, kind: str, settings: Settings,
            ws_rate: float, processes: int) -> None:
    total = len(done.ended)
    ended = sorted(done.ended)
    elapsed = ended[-1] - started
    click.echo(f"bench create: {workspaces} workspaces x {per_workspace} destinations = "
               f"{total}, {clients} clients, {kind} database, URL {target}"
               + (f", {processes} API processes" if processes > 1 else ""))
    click.echo(f"  workspaces: {ws_rate:,.0f}/s")
    click.echo(f"  destinations: {total / elapsed:,.0f}/s overall ({total} in {elapsed:.2f} s)")
    previous = started
    for upto in range(_STEP, total + _STEP, _STEP):
        last = ended[min(upto, total) - 1]
        count = min(upto, total) - (upto - _STEP)
        click.echo(f"    {upto - _STEP + 1:>6}-{min(upto, total):<6} "
                   f"{count / max(last - previous, 1e-9):>8,.0f}/s")
        previous = last
    latencies = sorted(done.latencies)
    click.echo(f"  latency per create: p50 {_pct(latencies, 50) * 1000:,.1f} ms, "
               f"p99 {_pct(latencies, 99) * 1000:,.1f} ms, "
               f"mean {statistics.fmean(latencies) * 1000:,.1f} ms")
    click.echo(f"  outbox drained (every config record and self-audit event published) "
               f"{drained:.2f} s after the last create")
    api = f"{processes} API processes'" if processes > 1 else "API process"
    click.echo(f"  {api} CPU while creating: {cpu:.1f} s, {cpu / total * 1000:.1f} ms "
               f"per create ({cpu / elapsed:.0%} of one core)")
    click.echo(f"  Python {platform.python_version()}, {platform.machine()}, "
               f"{os.cpu_count()} CPUs, broker {settings.kafka_bootstrap}")


def _pct(values: list[float], pct: int) -> float:
    return values[min(len(values) - 1, len(values) * pct // 100)]


# -- the API process ---------------------------------------------------------------------


def _api_env(settings: Settings) -> dict[str, str]:
    """This environment without ``AUDITRELAY_*``, plus the bench's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITRELAY_")}
    assert settings.secret_key is not None
    assert settings.admin_token is not None
    env.update({
        "AUDITRELAY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "AUDITRELAY_DATABASE_URL": settings.database_url,
        "AUDITRELAY_SECRET_KEY": settings.secret_key.get_secret_value(),
        "AUDITRELAY_ADMIN_TOKEN": settings.admin_token.get_secret_value(),
        "AUDITRELAY_ALLOW_PRIVATE_CIDRS": "127.0.0.0/8",
        "AUDITRELAY_TOPIC_PREFIX": settings.topic_prefix,
        "AUDITRELAY_VAR_DIR": str(settings.var_dir),
        "AUDITRELAY_LOG_LEVEL": "WARNING",
    })
    return env


def _api_process(settings: Settings, port: int,
                 log_path: Path) -> contextlib.AbstractContextManager[Any]:
    argv = [sys.executable, "-m", "auditrelay.ops", "api", "--host", "127.0.0.1",
            "--port", str(port)]
    return _process(argv, log_path, _api_env(settings))


def _wait_ready(proc: Any, port: int, log_path: Path) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT
    while True:
        with contextlib.suppress(OSError), urllib.request.urlopen(
                f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            if answer.status == 200:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise click.ClickException("the API did not get ready" + _tail(log_path))
        time.sleep(0.1)


def _tail(log_path: Path, lines: int = 30) -> str:
    text = log_path.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- {log_path.name} ---\n" + "\n".join(text)
