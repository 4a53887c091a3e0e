"""Fixtures of the archive suite: a fresh database of each kind, and archive rows.

The databases come from the API suite's helpers (``fresh_database``, the session's
local PostgreSQL), so there is one copy of that logic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from auditrelay.agents.archive import Row, event_row, insert_rows
from auditrelay.producer import Actor
from auditrelay.schemas.builder import EventBuilder
from auditrelay.schemas.codec import parse_event
from auditrelay.store.db import ArchivedEvent
from auditrelay.store.engine import make_engine, upgrade_database
from tests.integration.api.conftest import DB_KINDS, fresh_database, postgres_server

__all__ = ["postgres_server"]

BUILDER = EventBuilder()
ACTOR = Actor(id="usr_archive", type="user")


@pytest.fixture(params=DB_KINDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of each kind (a file, or a PostgreSQL database dropped after), upgraded
    to the head revision and empty."""
    with fresh_database(str(request.param), tmp_path,
                        lambda: request.getfixturevalue("postgres_server")) as url:
        upgrade_database(url)
        yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    created = make_engine(db_url)
    yield created
    created.dispose()


def make_row(workspace_id: str, time: datetime, *, category: str = "workspace",
             action: str = "updated", actor: Actor = ACTOR,
             target: tuple[str, str] | None = None) -> Row:
    """One archive row of a real, valid event."""
    built = BUILDER.build(workspace_id, category, action, actor=actor, time=time,
                          target=None if target is None else {"type": target[0],
                                                              "id": target[1]})
    return event_row(parse_event(built.value), built.value.decode())


def archive(engine: Engine, rows: Sequence[Row]) -> None:
    for i in range(0, len(rows), 2000):
        insert_rows(engine, rows[i:i + 2000])


def count_rows(engine: Engine, *where: object) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(ArchivedEvent)
                                     .where(*where)) or 0)  # type: ignore[arg-type]


RowFactory = Callable[..., Row]
