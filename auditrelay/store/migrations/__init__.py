"""Alembic migrations of ``auditrelay.store.db``, run programmatically (no alembic.ini).

Migrating is a step of its own (``auditrelay db upgrade``, the ``migrate`` service of
docker-compose, the start of ``auditrelay run``): :func:`upgrade` holds the database's
own lock while it runs, so two upgrades at once serialise and the second finds nothing
to do. The worker and the API only check (:func:`ensure_current`) and refuse to start
on a schema that is not at the code's head revision.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from auditrelay.schemas.errors import ConfigurationError

HERE = Path(__file__).parent

#: The command that brings a database to the head revision, named by every refusal.
UPGRADE_COMMAND = "auditrelay db upgrade"

#: Alembic's command API keeps its context in module globals: two threads of one
#: process migrating at once break each other's run (``KeyError: 'script'``). Between
#: processes, the database's lock (:func:`_lock`) serialises.
_MIGRATING = threading.Lock()

#: The PostgreSQL advisory lock of upgrades: any fixed 64-bit key that nothing else
#: uses (these are the bytes of "auditmig").
_ADVISORY_LOCK_KEY = 0x6175_6469_746D_6967


@dataclass(frozen=True)
class Upgrade:
    """What :func:`upgrade` did: the revision before (``None``: no schema) and after."""

    before: str | None
    after: str | None

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def describe(self) -> str:
        if not self.changed:
            return f"database already current (revision {self.after})"
        return f"database at revision {self.after} (was: {self.before or 'none'})"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    # The connection travels as an attribute, not as a URL option: URLs may hold
    # passwords and '%' characters that configparser would mangle or log.
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The revision this code needs: the newest in ``versions/``."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # only if versions/ were empty
        raise ConfigurationError("no Alembic revision found in auditrelay.store.migrations")
    return head


def current_revision(engine: Engine) -> str | None:
    """The database's revision; ``None`` when it has no schema yet."""
    with engine.connect() as connection:
        return _revision_of(connection)


def upgrade(engine: Engine, revision: str = "head") -> Upgrade:
    """Bring the database to ``revision`` (the newest by default), one process at a time.

    The lock, the reading of the current revision and the DDL share one transaction:
    a second upgrade waits for the first to commit, then reads its revision and has
    nothing left to do.
    """
    with _MIGRATING, engine.begin() as connection:
        _lock(connection)
        before = _revision_of(connection)
        if before is not None and before not in _known_revisions():
            raise _unknown(before, head_revision())
        command.upgrade(alembic_config(connection), revision)
        return Upgrade(before, _revision_of(connection))


def ensure_current(engine: Engine) -> None:
    """Return if the schema is at the head revision; else raise a one-line
    :class:`ConfigurationError` that names the command to run."""
    head = head_revision()
    current = current_revision(engine)
    if current == head:
        return
    if current is None:
        raise ConfigurationError(f"the database has no schema yet (code needs {head}): "
                                 f"run `{UPGRADE_COMMAND}`")
    if current not in _known_revisions():
        raise _unknown(current, head)
    raise ConfigurationError(f"the database schema is behind (at {current}, code needs "
                             f"{head}): run `{UPGRADE_COMMAND}`")


def _known_revisions() -> set[str]:
    return {script.revision for script in ScriptDirectory.from_config(
        alembic_config()).walk_revisions()}


def _unknown(current: str, head: str) -> ConfigurationError:
    # Upgrading cannot help here, so the message names no command.
    return ConfigurationError(f"the database schema is at {current}, a revision this code "
                              f"does not know (it needs {head}): is a newer auditrelay "
                              "using this database?")


def _revision_of(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _lock(connection: Connection) -> None:
    """Take the database's own lock until the end of ``connection``'s transaction."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                           {"key": _ADVISORY_LOCK_KEY})
    elif connection.dialect.name == "sqlite":
        # pysqlite leaves BEGIN to the first write; an immediate one takes the write
        # lock now, before the revision is read (a second upgrade waits, up to the
        # connection's busy timeout). SQLAlchemy's commit ends this transaction.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
