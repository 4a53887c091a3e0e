"""Retention: consumes the relational archive, produces deletions of expired events.

A workspace's events are kept for its plan's ``retention_days``; an Enterprise
workspace (a plan with ``extended_retention``) may have a longer period of its
own (``workspaces.retention_days``). Events of workspaces auditrelay does not
know, or whose plan is no longer configured, follow ``retention_default_plan``.

:func:`purge` deletes expired rows in bounded batches, ``DELETE ... WHERE id IN
(SELECT id ... LIMIT n)``, one transaction per batch, so memory and lock time
stay bounded whatever the backlog. It is safe to run twice or concurrently: on
PostgreSQL the subquery locks with ``FOR UPDATE SKIP LOCKED``, so two purges
take disjoint rows; SQLite's single writer lock serializes the batches. Either
way each expired row is deleted exactly once. ``auditrelay retention purge`` and
the worker's daily leader-only crontab both call it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import faust
from sqlalchemy import Engine, delete, func, select

from auditrelay.schemas.settings import Plan, Settings
from auditrelay.store.db import ArchivedEvent, Workspace, utcnow
from auditrelay.store.engine import check_database, checked_engine

if TYPE_CHECKING:
    from auditrelay.tables.registry import SharedFollower

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entitlement:
    """How long one workspace's events are kept, and why."""

    workspace_id: str
    plan: str
    days: int
    extended: bool = False


@dataclass
class WorkspacePurge:
    """What a purge did (or, dry, would do) in one workspace."""

    entitlement: Entitlement
    cutoff: datetime
    deleted: int = 0
    batches: int = 0


@dataclass
class PurgeReport:
    dry_run: bool
    now: datetime
    workspaces: list[WorkspacePurge] = field(default_factory=list)

    @property
    def deleted(self) -> int:
        return sum(w.deleted for w in self.workspaces)

    def lines(self) -> list[str]:
        """A summary table, one line per workspace with expired events."""
        verb = "expired" if self.dry_run else "deleted"
        out = [f"{'workspace':<45} {'plan':<12} {'days':>5} {'cutoff':<20} {verb:>12}"]
        for w in self.workspaces:
            e = w.entitlement
            days = f"{e.days}{'*' if e.extended else ''}"
            out.append(f"{e.workspace_id:<45} {e.plan:<12} {days:>5} "
                       f"{w.cutoff:%Y-%m-%dT%H:%M:%SZ} {w.deleted:>12}")
        tail = " (dry run: nothing deleted)" if self.dry_run else ""
        out.append(f"{len(self.workspaces)} workspace(s), {self.deleted} event(s) {verb}{tail};"
                   " * = extended retention")
        return out


#: Called after every batch with the workspace's running totals.
Progress = Callable[[WorkspacePurge], None]


def entitlement(workspace_id: str, plan_name: str | None, own_days: int | None,
                plans: Mapping[str, Plan], default_plan: str) -> Entitlement:
    """The retention of one workspace: its own extended period, else its plan's.

    ``plan_name`` None means auditrelay has no such workspace: the default plan applies.
    """
    plan = plans.get(plan_name or default_plan)
    if plan is None:
        log.warning("retention: workspace %s has plan %r, which is not configured; "
                    "applying the %r plan", workspace_id, plan_name, default_plan)
        plan_name, plan = default_plan, plans[default_plan]
    name = plan_name or default_plan
    if plan.extended_retention and own_days is not None and own_days > 0:
        return Entitlement(workspace_id, name, own_days, extended=True)
    return Entitlement(workspace_id, name, plan.retention_days)


def cutoff(now: datetime, days: int) -> datetime:
    """Events strictly older than this are expired."""
    return now - timedelta(days=days)


def purge(engine: Engine, settings: Settings, *, now: datetime | None = None,
          batch_size: int | None = None, dry_run: bool = False,
          progress: Progress | None = None) -> PurgeReport:
    """Delete (or count, ``dry_run``) every archived event past its entitlement."""
    now = now or utcnow()
    size = batch_size or settings.retention_batch_size
    if size < 1:
        raise ValueError("batch_size must be at least 1")
    report = PurgeReport(dry_run=dry_run, now=now)
    for ent in _entitlements(engine, settings):
        job = WorkspacePurge(ent, cutoff(now, ent.days))
        if dry_run:
            job.deleted = _count_expired(engine, job)
        else:
            _purge_workspace(engine, job, size, progress)
        if job.deleted:
            report.workspaces.append(job)
    return report


def _entitlements(engine: Engine, settings: Settings) -> list[Entitlement]:
    """One entitlement per workspace that has archived events."""
    with engine.connect() as connection:
        archived = sorted(connection.scalars(select(ArchivedEvent.workspace_id).distinct()))
        known = {row.id: (row.plan, row.retention_days) for row in connection.execute(
            select(Workspace.id, Workspace.plan, Workspace.retention_days))}
    return [entitlement(ws, *known.get(ws, (None, None)), settings.plans,
                        settings.retention_default_plan) for ws in archived]


def _count_expired(engine: Engine, job: WorkspacePurge) -> int:
    with engine.connect() as connection:
        count = connection.scalar(select(func.count()).select_from(ArchivedEvent)
                                  .where(ArchivedEvent.workspace_id
                                         == job.entitlement.workspace_id,
                                         ArchivedEvent.time < job.cutoff))
    return int(count or 0)


def _purge_workspace(engine: Engine, job: WorkspacePurge, size: int,
                     progress: Progress | None) -> None:
    victims = (select(ArchivedEvent.id)
               .where(ArchivedEvent.workspace_id == job.entitlement.workspace_id,
                      ArchivedEvent.time < job.cutoff)
               .limit(size))
    if engine.dialect.name == "postgresql":
        # A concurrent purge skips the rows this one is deleting instead of waiting.
        victims = victims.with_for_update(skip_locked=True)
    statement = delete(ArchivedEvent).where(ArchivedEvent.id.in_(victims))
    while True:
        with engine.begin() as connection:
            deleted = connection.execute(statement).rowcount
        if deleted <= 0:
            return
        job.deleted += deleted
        job.batches += 1
        if progress is not None:
            progress(job)


def purge_database(settings: Settings, *, dry_run: bool = False,
                   progress: Progress | None = None) -> PurgeReport:
    """:func:`purge` on the configured database, opened (its schema checked) for this run."""
    engine = checked_engine(settings.database_url)
    try:
        return purge(engine, settings, dry_run=dry_run, progress=progress)
    finally:
        engine.dispose()


def register(app: faust.App, settings: Settings, destinations: SharedFollower) -> None:
    """The daily purge, on the leader worker only (Faust's leader topic elects it).

    ``destinations`` (the app's destination registry) is not needed here.
    """
    # Checked now: a schema not at head stops the worker's start, not tomorrow's purge.
    check_database(settings.database_url)

    @app.crontab(settings.retention_cron, timezone=UTC, on_leader=True)
    async def daily_purge() -> None:
        await run_scheduled_purge(settings)


async def run_scheduled_purge(settings: Settings) -> PurgeReport | None:
    """The crontab's body: purge in a thread, log the summary, never raise."""
    try:
        report = await asyncio.to_thread(purge_database, settings)
    except Exception:  # a failed run is retried by tomorrow's; the worker keeps going
        log.exception("retention: the daily purge failed")
        return None
    for line in report.lines():
        log.info("retention: %s", line)
    return report
