"""Migrations as a step: ``auditrelay db upgrade`` from several processes at once, on
SQLite and PostgreSQL, and processes started on a database behind the code refusing."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
from sqlalchemy import text

from auditrelay.store.engine import make_engine
from auditrelay.store.migrations import head_revision, upgrade
from tests.integration.api.conftest import DB_KINDS, fresh_database, postgres_server

__all__ = ["postgres_server"]

PROCESSES = 4
_DEADLINE = 60.0


@pytest.fixture(params=DB_KINDS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind: no schema at all."""
    with fresh_database(str(request.param), tmp_path,
                        lambda: request.getfixturevalue("postgres_server")) as url:
        yield url


def _upgrade_at_the_barrier(url: str, barrier: Barrier, report: Connection) -> None:
    """One process's upgrade, started when every process is ready to start its own."""
    engine = make_engine(url)
    try:
        barrier.wait(_DEADLINE)
        done = upgrade(engine)
        report.send(("ok", done.before, done.after))
    except Exception as exc:  # reported to the test, which fails with it
        report.send(("error", type(exc).__name__, str(exc)[:500]))
    finally:
        engine.dispose()
        report.close()


def test_upgrades_in_several_processes_at_once_serialise(empty_url: str) -> None:
    # spawn, not fork: a fork of this process (an xdist worker, with threads) could
    # crash in the child's garbage collection (seen in CI). The barrier makes them begin
    # together, so without the database's lock they collide (tables or alembic_version
    # "already exists", "database is locked").
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    pipes = [context.Pipe(duplex=False) for _ in range(PROCESSES)]
    procs = [context.Process(target=_upgrade_at_the_barrier, args=(empty_url, barrier, sender))
             for _, sender in pipes]
    for proc in procs:
        proc.start()
    try:
        results = []
        for receiver, sender in pipes:
            sender.close()
            assert receiver.poll(_DEADLINE), "an upgrading process did not report"
            results.append(receiver.recv())
    finally:
        for proc in procs:
            proc.join(_DEADLINE)
    assert [proc.exitcode for proc in procs] == [0] * PROCESSES
    head = head_revision()
    # Exactly one found no schema and made it; every other waited, then had nothing to do.
    assert Counter(results) == {("ok", None, head): 1, ("ok", head, head): PROCESSES - 1}, (
        results)

    engine = make_engine(empty_url)
    try:
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT version_num FROM alembic_version")) == head
            assert connection.scalar(text("SELECT count(*) FROM alembic_version")) == 1
            catalogue = ("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = :t"
                         if engine.dialect.name == "sqlite" else
                         "SELECT count(*) FROM information_schema.tables WHERE table_name = :t")
            for table in ("archived_events", "outbox_lease", "alembic_version"):
                assert connection.scalar(text(catalogue), {"t": table}) == 1, table
            # 0002's one lease row, inserted once.
            assert connection.scalar(text("SELECT count(*) FROM outbox_lease")) == 1
    finally:
        engine.dispose()


# -- the commands, as processes --------------------------------------------------------------


def _auditrelay(tmp_path: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITRELAY_")}
    env.update({"AUDITRELAY_DATABASE_URL": database_url, "AUDITRELAY_VAR_DIR": str(tmp_path),
                "AUDITRELAY_LOG_LEVEL": "WARNING"})
    return subprocess.run([sys.executable, "-m", "auditrelay.ops", *args], env=env,
                          capture_output=True, text=True, timeout=_DEADLINE, check=False)


def test_db_upgrade_on_a_fresh_sqlite_file_then_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'fresh.db'}"
    head = head_revision()
    before = _auditrelay(tmp_path, url, "db", "status")
    assert before.returncode == 3, before.stderr
    assert before.stdout.split() == ["current", "none", "head", head]

    first = _auditrelay(tmp_path, url, "db", "upgrade")
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"database at revision {head} (was: none)\n"
    second = _auditrelay(tmp_path, url, "db", "upgrade")
    assert second.returncode == 0, second.stderr
    assert second.stdout == f"database already current (revision {head})\n"

    after = _auditrelay(tmp_path, url, "db", "status")
    assert after.returncode == 0, after.stderr
    assert after.stdout.split() == ["current", head, "head", head]


@pytest.mark.parametrize("command", [["api", "--port", "1"], ["worker", "--stages", "archive"],
                                     ["worker", "--stages", "delivery"]],
                         ids=["api", "archive-worker", "delivery-worker"])
def test_a_process_started_on_a_schema_behind_refuses_naming_the_command(
        tmp_path: Path, command: list[str]) -> None:
    url = f"sqlite:///{tmp_path / 'behind.db'}"
    engine = make_engine(url)
    try:
        upgrade(engine, "0002")
    finally:
        engine.dispose()
    refused = _auditrelay(tmp_path, url, *command)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: the database schema is behind (at 0002, code needs {head_revision()}): "
        "run `auditrelay db upgrade`")
