"""Migrations that move data, on SQLite and PostgreSQL: what was stored before an
upgrade still works after it (and after a downgrade, where one is supported)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from auditrelay.api.tokens import hash_token, new_token
from auditrelay.schemas.destinations import DestinationConfig
from auditrelay.schemas.errors import ConfigurationError
from auditrelay.store.engine import make_engine
from auditrelay.store.migrations import current_revision, head_revision, upgrade
from auditrelay.store.mutations import republish_after_upgrade
from auditrelay.wire.secrets import SecretBox, generate_key
from tests.integration.api.conftest import DB_KINDS, fresh_database, postgres_server
from tests.support.settings import make_settings

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


SLACK = "https://hooks.slack.com/services/T0/B0/SECRETVALUE?token=SECRETVALUE"
#: (URL at 0004, its hint after 0005)
URLS = [(SLACK, "https://hooks.slack.com/\u2026"),
        ("https://siem.example.com:8443/", "https://siem.example.com:8443")]


def destinations_at_0004(engine: Engine) -> None:
    """A workspace with one destination per ``URLS``, written as revision 0004 stored them."""
    upgrade(engine, "0004")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO workspaces (id, name, plan, created_at) "
                          "VALUES ('ws_old', 'old', 'enterprise', :created)"),
                     {"created": CREATED})
        for n, (url, _) in enumerate(URLS):
            conn.execute(text(
                "INSERT INTO destinations (id, workspace_id, name, url, enabled, event_types, "
                "secret_encrypted, version, created_at, updated_at) VALUES (:id, 'ws_old', "
                "'siem', :url, :enabled, '[]', 'v1:secret', 3, :created, :created)"),
                {"id": f"dst_{n}", "url": url, "enabled": True, "created": CREATED})


def test_destination_urls_from_before_0005_are_encrypted_and_masked(engine: Engine) -> None:
    destinations_at_0004(engine)
    box = SecretBox(generate_key())

    upgrade(engine, "0005", box=box)

    with engine.connect() as conn:
        result = conn.execute(text(
            "SELECT id, url_encrypted, url_hint FROM destinations ORDER BY id"))
        rows, columns = result.all(), conn.execute(text("SELECT * FROM destinations")).keys()
    assert "url" not in columns
    assert [(box.decrypt(sealed), hint) for _, sealed, hint in rows] == URLS
    assert all("SECRETVALUE" not in sealed for _, sealed, _ in rows)

    upgrade_back(engine, "0004", box)
    with engine.connect() as conn:
        back = conn.execute(text("SELECT url FROM destinations ORDER BY id")).scalars().all()
    assert back == [url for url, _ in URLS]


def test_without_the_key_urls_to_encrypt_refuse_the_upgrade_whole(engine: Engine) -> None:
    destinations_at_0004(engine)

    with pytest.raises(ConfigurationError, match="AUDITRELAY_SECRET_KEY"):
        upgrade(engine)

    assert current_revision(engine) == "0004"
    with engine.connect() as conn:
        urls = conn.execute(text("SELECT url FROM destinations ORDER BY id")).scalars().all()
    assert urls == [url for url, _ in URLS]


def test_without_destinations_no_key_is_needed(engine: Engine) -> None:
    upgrade(engine, "0004")
    assert upgrade(engine).after == head_revision()


def test_the_upgrade_step_republishes_each_config_encrypted(engine: Engine,
                                                           tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "127.0.0.1:9092", "test.republish.")
    destinations_at_0004(engine)
    assert settings.secret_key is not None
    box = SecretBox(settings.secret_key.get_secret_value())

    upgrade(engine, box=box, after=republish_after_upgrade(settings))

    with engine.connect() as conn:
        entries = conn.execute(text("SELECT topic, key, value FROM outbox ORDER BY id")).all()
        versions = conn.execute(text("SELECT version FROM destinations")).scalars().all()
    assert versions == [4] * len(URLS)  # consumers take the new record over the old
    configs = [DestinationConfig.model_validate_json(value) for _, _, value in entries]
    assert [(t, bytes(k).decode()) for t, k, _ in entries] == [
        (settings.topics.destinations, f"dst_{n}") for n in range(len(URLS))]
    assert [(c.url, box.decrypt(c.url_encrypted or ""), c.url_hint, c.version)
            for c in configs] == [(None, url, hint, 4) for url, hint in URLS]
    assert all(b"SECRETVALUE" not in bytes(value) for _, _, value in entries)
    # Once done, another upgrade re-publishes nothing.
    upgrade(engine, box=box, after=republish_after_upgrade(settings))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM outbox")).scalar_one() == len(URLS)


def upgrade_back(engine: Engine, revision: str = "0003", box: SecretBox | None = None) -> None:
    """Alembic's downgrade to ``revision``, through the same entry point's configuration."""
    from alembic import command

    from auditrelay.store.migrations import alembic_config
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn, box), revision)
