"""Migrations that move data, on SQLite and PostgreSQL: what was stored before an
upgrade still works after it (and after a downgrade, where one is supported)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from auditrelay.api.tokens import hash_token, new_token
from auditrelay.store.engine import make_engine
from auditrelay.store.migrations import upgrade
from tests.integration.api.conftest import DB_KINDS, fresh_database, postgres_server

__all__ = ["postgres_server"]

CREATED = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture(params=DB_KINDS)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with fresh_database(str(request.param), tmp_path,
                        lambda: request.getfixturevalue("postgres_server")) as url:
        created = make_engine(url)
        yield created
        created.dispose()


def test_a_workspace_token_from_before_0004_becomes_its_initial_token(engine: Engine) -> None:
    upgrade(engine, "0003")
    token = new_token()
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO workspaces (id, name, plan, token_hash, created_at) "
                          "VALUES ('ws_old', 'old', 'enterprise', :hash, :created)"),
                     {"hash": hash_token(token), "created": CREATED})

    upgrade(engine, "0004")

    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT workspace_id, name, prefix, token_hash FROM workspace_tokens")).all()
        columns = conn.execute(text("SELECT * FROM workspaces")).keys()
    assert [tuple(r) for r in rows] == [("ws_old", "initial", None, hash_token(token))]
    assert "token_hash" not in columns

    upgrade_back(engine)
    with engine.connect() as conn:
        back = conn.execute(text("SELECT token_hash FROM workspaces WHERE id = 'ws_old'"))
        assert back.scalar_one() == hash_token(token)


def upgrade_back(engine: Engine) -> None:
    """Alembic's downgrade to 0003, through the same entry point's configuration."""
    from alembic import command

    from auditrelay.store.migrations import alembic_config
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0003")
