"""The retention purge on real SQLite and PostgreSQL: exact, repeatable, concurrent, bounded."""

from __future__ import annotations

import threading
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, event, text

from auditrelay.agents.retention import PurgeReport, purge
from auditrelay.ops.cli import cli
from auditrelay.schemas.settings import Settings
from auditrelay.store.db import ArchivedEvent, Workspace
from auditrelay.store.engine import make_engine
from tests.integration.archive.conftest import archive, count_rows, make_row

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
#: workspace -> (plan or None for unknown to auditrelay, own retention days, expected days)
WORKSPACES: dict[str, tuple[str | None, int | None, int]] = {
    "ws_free": ("free", None, 7),
    "ws_team": ("team", None, 30),
    "ws_business": ("business", 200, 90),  # own days ignored: no extended retention
    "ws_enterprise": ("enterprise", None, 365),
    "ws_extended": ("enterprise", 380, 380),
    "ws_retired": ("retired_plan", None, 7),  # plan no longer configured: default plan
    "ws_unknown": (None, None, 7),  # events of a workspace auditrelay does not know
}


def seed_workspaces(engine: Engine) -> None:
    with engine.begin() as connection:
        for ws, (plan, days, _) in WORKSPACES.items():
            if plan is not None:
                connection.execute(Workspace.__table__.insert().values(
                    id=ws, name=ws, plan=plan,
                    retention_days=days, created_at=NOW))


def seed_events(engine: Engine) -> dict[str, list[datetime]]:
    """Two events a day over 400 days in every workspace, at odd hours."""
    times = {ws: [NOW - timedelta(days=d, hours=h) for d in range(400) for h in (1, 13)]
             for ws in WORKSPACES}
    archive(engine, [make_row(ws, t) for ws, ts in times.items() for t in ts])
    return times


def expected_left(times: dict[str, list[datetime]]) -> dict[str, int]:
    return {ws: sum(t >= NOW - timedelta(days=WORKSPACES[ws][2]) for t in ts)
            for ws, ts in times.items()}


def left_per_workspace(engine: Engine) -> dict[str, int]:
    return {ws: count_rows(engine, ArchivedEvent.workspace_id == ws) for ws in WORKSPACES}


@pytest.fixture
def seeded(engine: Engine) -> dict[str, list[datetime]]:
    seed_workspaces(engine)
    return seed_events(engine)


def test_one_purge_leaves_exactly_each_entitlement_and_a_second_deletes_nothing(
        engine: Engine, seeded: dict[str, list[datetime]]) -> None:
    settings = Settings()
    progress: list[tuple[str, int]] = []
    first = purge(engine, settings, now=NOW, batch_size=97,
                  progress=lambda job: progress.append((job.entitlement.workspace_id,
                                                        job.deleted)))
    wanted = expected_left(seeded)
    assert left_per_workspace(engine) == wanted
    for ws, (_, _, days) in WORKSPACES.items():
        assert count_rows(engine, ArchivedEvent.workspace_id == ws,
                          ArchivedEvent.time < NOW - timedelta(days=days)) == 0
    total = sum(len(ts) for ts in seeded.values())
    assert first.deleted == total - sum(wanted.values())
    by_ws = {w.entitlement.workspace_id: w for w in first.workspaces}
    assert by_ws["ws_extended"].entitlement.extended
    assert by_ws["ws_business"].entitlement.days == 90
    assert by_ws["ws_unknown"].entitlement.plan == "free"
    assert progress[-1][1] > 97  # several batches were reported
    assert any("ws_extended" in line for line in first.lines())

    again = purge(engine, settings, now=NOW, batch_size=97)
    assert again.deleted == 0
    assert again.workspaces == []
    assert left_per_workspace(engine) == wanted


def test_dry_run_counts_without_deleting(engine: Engine,
                                         seeded: dict[str, list[datetime]]) -> None:
    before = left_per_workspace(engine)
    report = purge(engine, Settings(), now=NOW, dry_run=True)
    assert left_per_workspace(engine) == before
    wanted = expected_left(seeded)
    assert report.deleted == sum(before.values()) - sum(wanted.values())
    assert "dry run" in report.lines()[-1]


def test_two_concurrent_purges_delete_each_expired_row_once(
        db_url: str, engine: Engine, seeded: dict[str, list[datetime]]) -> None:
    total = sum(len(ts) for ts in seeded.values())
    wanted = expected_left(seeded)
    reports: list[PurgeReport] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run(own: Engine) -> None:
        try:
            start.wait(timeout=30)
            reports.append(purge(own, Settings(), now=NOW, batch_size=25))
        except BaseException as exc:  # reported below, with the test's assertion
            errors.append(exc)
        finally:
            own.dispose()

    # Each purge has its own engine (connections), as a second process would.
    threads = [threading.Thread(target=run, args=(make_engine(db_url),)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert len(reports) == 2
    assert sum(r.deleted for r in reports) == total - sum(wanted.values())
    assert left_per_workspace(engine) == wanted


class DeleteLog:
    """Rows deleted by every DELETE statement an engine runs."""

    def __init__(self, engine: Engine) -> None:
        self.rowcounts: list[int] = []
        event.listen(engine, "after_cursor_execute", self._after)

    def _after(self, _conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            self.rowcounts.append(cursor.rowcount)


def bulk_seed_expired(engine: Engine, count: int) -> None:
    """``count`` expired rows of one workspace, inserted by the database itself."""
    # Constant SQL: no value of the statement comes from input.
    if engine.dialect.name == "sqlite":
        sql = ("WITH RECURSIVE c(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM c WHERE n < :last) "
               "INSERT INTO archived_events (id, source, workspace_id, type, time, actor_id, "
               "actor_type, raw) SELECT printf('aud_%026d', n), 'src', 'ws_big', "
               "'pro.atmos.workspace.updated', '2020-01-01 00:00:00.000000', 'usr_1', 'user', "
               "'{}' FROM c")
    else:
        sql = ("INSERT INTO archived_events (id, source, workspace_id, type, time, actor_id, "
               "actor_type, raw) SELECT 'aud_' || lpad(n::text, 26, '0'), 'src', 'ws_big', "
               "'pro.atmos.workspace.updated', TIMESTAMPTZ '2020-01-01 00:00:00+00', 'usr_1', "
               "'user', '{}' "
               "FROM generate_series(0, :last) AS n")
    with engine.begin() as connection:
        connection.execute(text(sql), {"last": count - 1})


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_million_expired_rows_are_purged_in_bounded_batches(engine: Engine) -> None:
    million, batch = 1_000_000, 20_000
    bulk_seed_expired(engine, million)
    assert count_rows(engine) == million
    log = DeleteLog(engine)
    tracemalloc.start()
    try:
        report = purge(engine, Settings(), now=NOW, batch_size=batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.deleted == million
    assert count_rows(engine) == 0
    assert log.rowcounts, "no DELETE was captured"
    assert max(log.rowcounts) <= batch
    assert sum(log.rowcounts) == million
    assert len(log.rowcounts) >= million // batch
    assert peak < 8 * 1024 * 1024, f"purge peaked at {peak} bytes of Python memory"


def test_cli_purge_dry_run_then_for_real(db_url: str, engine: Engine,
                                         seeded: dict[str, list[datetime]],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("auditrelay.agents.retention.utcnow", lambda: NOW)
    runner = CliRunner()
    env = {"AUDITRELAY_DATABASE_URL": db_url}
    before = count_rows(engine)
    dry = runner.invoke(cli, ["retention", "purge", "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    assert "ws_extended" in dry.output
    assert "dry run" in dry.output
    assert count_rows(engine) == before

    real = runner.invoke(cli, ["retention", "purge", "--batch-size", "500"], env=env)
    assert real.exit_code == 0, real.output
    assert left_per_workspace(engine) == expected_left(seeded)
    assert "deleted" in real.output.splitlines()[-1]
    assert "ws_free: " in real.output  # progress lines
