"""``auditrelay db upgrade`` / ``db status``: the database schema, migrated as a step.

The worker and the API never migrate: they check that the schema is at the head
revision and refuse to start otherwise. ``db upgrade`` is the step that brings it
there (docker-compose's one-shot ``migrate`` service, ``auditrelay run`` before its
children); two at once serialise on the database's own lock.
"""

from __future__ import annotations

import sys

import click

from auditrelay.schemas.settings import Settings


@click.group()
def db() -> None:
    """The database schema (Alembic migrations)."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(settings: Settings) -> None:
    """Bring the schema to the head revision; safe to run twice, or twice at once."""
    from auditrelay.store.engine import upgrade_database

    click.echo(upgrade_database(settings.database_url).describe())


@db.command("status")
@click.pass_obj
def db_status(settings: Settings) -> None:
    """Print the database's revision and the code's; exit 3 unless they are the same."""
    from auditrelay.store.engine import make_engine
    from auditrelay.store.migrations import UPGRADE_COMMAND, current_revision, head_revision

    engine = make_engine(settings.database_url)
    try:
        current = current_revision(engine)
    finally:
        engine.dispose()
    head = head_revision()
    click.echo(f"current  {current or 'none'}")
    click.echo(f"head     {head}")
    if current != head:
        click.echo(f"(not current: run `{UPGRADE_COMMAND}`)", err=True)
        sys.exit(3)
