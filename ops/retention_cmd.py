"""``auditrelay retention purge [--dry-run]``: delete archived events past their entitlement.

The same :func:`auditrelay.agents.retention.purge` the worker's daily crontab runs; safe to
run while the worker runs, twice, or concurrently (docs/archive.md).
"""

from __future__ import annotations

import click

from auditrelay.schemas.settings import Settings


@click.group()
def retention() -> None:
    """Retention of the relational archive of audit events."""


@retention.command("purge")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--batch-size", type=click.IntRange(1, 1_000_000), default=None,
              help="Most rows per DELETE (default: AUDITRELAY_RETENTION_BATCH_SIZE).")
@click.pass_obj
def purge(settings: Settings, dry_run: bool, batch_size: int | None) -> None:
    """Delete every archived event older than its workspace's retention; print a summary."""
    from auditrelay.agents.retention import WorkspacePurge, purge_database

    def progress(job: WorkspacePurge) -> None:
        click.echo(f"  {job.entitlement.workspace_id}: {job.deleted} deleted "
                   f"({job.batches} batches)", err=True)

    if batch_size is not None:
        settings = settings.model_copy(update={"retention_batch_size": batch_size})
    report = purge_database(settings, dry_run=dry_run, progress=progress)
    for line in report.lines():
        click.echo(line)
