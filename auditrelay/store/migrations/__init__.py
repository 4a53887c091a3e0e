"""Alembic migrations of ``auditrelay.store.db``, run programmatically (no alembic.ini).

Migrating is a step of its own (``auditrelay db upgrade``, the ``migrate`` service of
docker-compose, the start of ``auditrelay run``): :func:`upgrade` holds the database's
own lock while it runs, so two upgrades at once serialise and the second finds nothing
to do. The worker and the API only check (:func:`ensure_current`) and refuse to start
on a schema that is not at the code's head revision.

Some revisions move secrets: 0005 encrypts destination URLs, so :func:`upgrade` takes
the box of secrets at rest (``box``), which a revision finds in
``context.config.attributes["box"]``. A database with nothing to encrypt needs none.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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


class Encrypter(Protocol):
    """What a data migration needs of ``auditrelay.wire.secrets.SecretBox``."""

    def encrypt(self, plaintext: str) -> str: ...


@dataclass(frozen=True)
class Upgrade:
    """What :func:`upgrade` did: the revision before (``None``: no schema) and after."""

    before: str | None
    after: str | None

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def crossed(self, revision: str) -> bool:
        """Whether this upgrade applied ``revision`` (revisions are numbered in order)."""
        return (self.before is None or self.before < revision) and \
            self.after is not None and self.after >= revision

    def describe(self) -> str:
        if not self.changed:
            return f"database already current (revision {self.after})"
        return f"database at revision {self.after} (was: {self.before or 'none'})"


#: Called at the end of an upgrade, in its transaction, with what it did.
AfterUpgrade = Callable[[Connection, Upgrade], None]


def alembic_config(connection: Connection | None = None,
                   box: Encrypter | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    # The connection travels as an attribute, not as a URL option: URLs may hold
    # passwords and '%' characters that configparser would mangle or log.
    config.attributes["connection"] = connection
    config.attributes["box"] = box
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


def upgrade(engine: Engine, revision: str = "head", *, box: Encrypter | None = None,
            after: AfterUpgrade | None = None) -> Upgrade:
    """Bring the database to ``revision`` (the newest by default), one process at a time.

    The lock, the reading of the current revision and the DDL share one transaction:
    a second upgrade waits for the first to commit, then reads its revision and has
    nothing left to do. ``box`` encrypts what a revision moves to ciphertext; ``after``
    runs last in the same transaction (``auditrelay.store.mutations`` re-publishes the
    destinations' configs with it).
    """
    with (_MIGRATING, engine.connect() as connection, _sqlite_cascades_off(connection),
          connection.begin()):
        _lock(connection)
        before = _revision_of(connection)
        if before is not None and before not in _known_revisions():
            raise _unknown(before, head_revision())
        command.upgrade(alembic_config(connection, box), revision)
        _check_references(connection)
        done = Upgrade(before, _revision_of(connection))
        if after is not None:
            after(connection, done)
        return done


@contextmanager
def _sqlite_cascades_off(connection: Connection) -> Iterator[None]:
    """On SQLite, foreign keys off while migrations run; elsewhere nothing.

    SQLite alters a table by copying it and dropping the original (Alembic's batch
    mode), and dropping a table deletes its rows first, with ON DELETE CASCADE: with
    foreign keys on, altering ``workspaces`` would empty every table that refers to
    it. The pragma is ignored inside a transaction, so it is set around it;
    :func:`_check_references` proves before the commit that nothing was left dangling.
    """
    if connection.dialect.name != "sqlite":
        yield
        return
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    connection.commit()
    try:
        yield
    finally:
        connection.rollback()
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.commit()


def _check_references(connection: Connection) -> None:
    if connection.dialect.name != "sqlite":
        return  # PostgreSQL checks every reference as the DDL runs
    dangling = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
    if dangling:
        tables = sorted({str(row[0]) for row in dangling})
        raise ConfigurationError(f"the upgrade would leave rows of {', '.join(tables)} "
                                 "referring to rows that do not exist; nothing was changed")


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
