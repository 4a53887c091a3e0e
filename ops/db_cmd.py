"""``auditrelay db upgrade`` / ``db status``: the database schema, migrated as a step.

The worker and the API never migrate: they check that the schema is at the head
revision and refuse to start otherwise. ``db upgrade`` is the step that brings it
there (docker-compose's one-shot ``migrate`` service, ``auditrelay run`` before its
children); two at once serialise on the database's own lock.
"""

from __future__ import annotations

import sys
import typing

import click

from auditrelay.schemas.settings import Settings

if typing.TYPE_CHECKING:
    from auditrelay.store.migrations import Upgrade
    from auditrelay.wire.secrets import SecretBox


@click.group()
def db() -> None:
    """The database schema (Alembic migrations)."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(settings: Settings) -> None:
    """Bring the schema to the head revision; safe to run twice, or twice at once."""
    click.echo(upgrade(settings).describe())


def upgrade(settings: Settings) -> Upgrade:
    """The upgrade step (``auditrelay run`` too): with the key of secrets at rest when
    there is one (revision 0005 encrypts the destinations' URLs with it), and the
    destinations' configs re-published when a revision re-encrypted them."""
    from auditrelay.store.engine import upgrade_database
    from auditrelay.store.mutations import republish_after_upgrade

    return upgrade_database(settings.database_url, box=_existing_box(settings),
                            after=republish_after_upgrade(settings))


def _existing_box(settings: Settings) -> SecretBox | None:
    """The box of ``AUDITRELAY_SECRET_KEY``, or of the development key if one was made.

    Never a new key: URLs encrypted under a key that the worker and the API do not have
    would be lost. Without one, an upgrade that must encrypt is refused, naming the variable.
    """
    from auditrelay.wire.secrets import DEV_KEY_FILENAME, box_from_settings

    if settings.secret_key is None and not (settings.var_dir / DEV_KEY_FILENAME).exists():
        return None
    return box_from_settings(settings)


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
