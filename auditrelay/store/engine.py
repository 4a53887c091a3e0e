"""The database engine and sessions of one process; SQLAlchemy errors end here.

An engine leaves the schema as it finds it: long-running processes open theirs with
:func:`checked_engine` (refusing a schema not at the head revision), and only the
upgrade step (``auditrelay db upgrade``, :func:`upgrade_database`) changes it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from auditrelay.store.migrations import AfterUpgrade, Encrypter, Upgrade, ensure_current, upgrade

#: How long a SQLite connection waits for another's lock (the driver's busy timeout).
_SQLITE_BUSY_SECONDS = 30.0


def make_engine(url: str) -> Engine:
    """An engine for ``url``, SQLite made safe for threads; the schema is not touched."""
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False,
                                  "timeout": _SQLITE_BUSY_SECONDS}
    engine = create_engine(url, **kwargs)
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def checked_engine(url: str) -> Engine:
    """:func:`make_engine`, once the schema is known to be at the head revision; else a
    :class:`~auditrelay.schemas.errors.ConfigurationError` naming ``auditrelay db upgrade``."""
    engine = make_engine(url)
    try:
        ensure_current(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def check_database(url: str) -> None:
    """Raise as :func:`checked_engine` does unless the schema at ``url`` is at head; for
    a stage that opens its engine later but must refuse to start now."""
    checked_engine(url).dispose()


def upgrade_database(url: str, *, box: Encrypter | None = None,
                     after: AfterUpgrade | None = None) -> Upgrade:
    """Bring the database at ``url`` to the head revision (the upgrade step).

    ``box`` (the box of secrets at rest) is needed when there are destination URLs to
    encrypt; ``after`` runs in the upgrade's transaction (see ``migrations.upgrade``).
    """
    engine = make_engine(url)
    try:
        return upgrade(engine, box=box, after=after)
    finally:
        engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the outbox publisher read while a request writes; foreign keys
    # are off by default in SQLite and the schema relies on ON DELETE CASCADE.
    _set_wal(cursor)
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _set_wal(cursor: Any) -> None:
    """Switch a database file to WAL; it stays so, so later connections find it done.

    Switching needs the file to itself and SQLite does not wait for that (no busy
    handler): while a new file is being switched, or another process holds its write
    lock (an upgrade starting at once), the switch fails at once; it is tried again.
    """
    deadline = time.monotonic() + _SQLITE_BUSY_SECONDS
    delay = 0.01
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)  # a connect-time retry, off the event loop
            delay = min(delay * 2, 0.5)


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One session in one transaction: committed on success, rolled back on error."""
        with self._sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()
