"""auditrelay.store.migrations: the upgrade step, and the check every process makes at start.

Upgrades from several processes at once, on SQLite and PostgreSQL, and the
``auditrelay db`` commands run as processes are in ``tests/integration/test_migrations.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, inspect, text

from auditrelay.agents import archive, pipeline, retention
from auditrelay.agents.app import Registrar
from auditrelay.agents.app import create_app as create_worker_app
from auditrelay.api.app import create_app as create_api_app
from auditrelay.schemas.errors import ConfigurationError
from auditrelay.schemas.settings import Settings
from auditrelay.store.engine import checked_engine, make_engine
from auditrelay.store.migrations import (
    Upgrade,
    current_revision,
    ensure_current,
    head_revision,
    upgrade,
)
from auditrelay.wire.secrets import generate_key

HEAD = "0006"
BEHIND = "0002"
#: What every refusal of a schema behind the code says, on one line.
BEHIND_MESSAGE = (f"the database schema is behind (at {BEHIND}, code needs {HEAD}): "
                  "run `auditrelay db upgrade`")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    created = make_engine(f"sqlite:///{tmp_path}/db.sqlite")
    yield created
    created.dispose()


def behind_settings(tmp_path: Path) -> Settings:
    """Settings whose database is one revision behind the code."""
    settings = Settings(var_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/behind.db",
                        secret_key=generate_key(), topic_prefix="unit.")
    behind = make_engine(settings.database_url)
    try:
        upgrade(behind, BEHIND)
    finally:
        behind.dispose()
    return settings


def test_the_head_is_the_newest_revision() -> None:
    assert head_revision() == HEAD


def test_an_upgrade_reports_what_it_did_and_a_second_has_nothing_to_do(engine: Engine) -> None:
    assert current_revision(engine) is None
    first = upgrade(engine, BEHIND)
    assert first == Upgrade(None, BEHIND)
    assert first.describe() == f"database at revision {BEHIND} (was: none)"
    second = upgrade(engine)
    assert second == Upgrade(BEHIND, HEAD)
    assert second.describe() == f"database at revision {HEAD} (was: {BEHIND})"
    again = upgrade(engine)
    assert not again.changed
    assert again.describe() == f"database already current (revision {HEAD})"
    assert current_revision(engine) == HEAD
    assert "archived_events" in inspect(engine).get_table_names()


def test_threads_of_one_process_upgrade_their_databases_at_the_same_time(
        tmp_path: Path) -> None:
    engines = [create_engine(f"sqlite:///{tmp_path}/db{n}.sqlite") for n in range(6)]
    try:
        with ThreadPoolExecutor(len(engines)) as pool:
            done = list(pool.map(upgrade, engines))  # re-raises the first failure
        assert done == [Upgrade(None, HEAD)] * len(engines)
        for engine in engines:
            assert "archived_events" in inspect(engine).get_table_names()
    finally:
        for engine in engines:
            engine.dispose()


def test_threads_upgrading_one_database_at_the_same_time_upgrade_it_once(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/one.sqlite"
    engines = [make_engine(url) for _ in range(4)]
    try:
        with ThreadPoolExecutor(len(engines)) as pool:
            done = list(pool.map(upgrade, engines))
        assert sorted(done, key=lambda u: u.changed) == (
            [Upgrade(HEAD, HEAD)] * (len(engines) - 1) + [Upgrade(None, HEAD)])
        with engines[0].connect() as connection:
            assert connection.scalar(text("SELECT count(*) FROM sqlite_master WHERE "
                                          "name = 'archived_events'")) == 1
    finally:
        for engine in engines:
            engine.dispose()


def test_the_check_passes_at_head_only(engine: Engine) -> None:
    with pytest.raises(ConfigurationError) as empty:
        ensure_current(engine)
    assert str(empty.value) == (f"the database has no schema yet (code needs {HEAD}): "
                                "run `auditrelay db upgrade`")
    upgrade(engine, BEHIND)
    with pytest.raises(ConfigurationError) as behind:
        ensure_current(engine)
    assert str(behind.value) == BEHIND_MESSAGE
    upgrade(engine)
    ensure_current(engine)


def test_a_revision_the_code_does_not_know_is_not_called_behind(engine: Engine) -> None:
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    with pytest.raises(ConfigurationError) as newer:
        ensure_current(engine)
    message = str(newer.value)
    assert "at 0099, a revision this code does not know" in message
    assert "db upgrade" not in message  # upgrading could not help
    with pytest.raises(ConfigurationError) as not_upgraded:
        upgrade(engine)
    assert str(not_upgraded.value) == message
    assert current_revision(engine) == "0099"


def test_checked_engine_refuses_a_schema_behind_and_opens_one_at_head(tmp_path: Path) -> None:
    settings = behind_settings(tmp_path)
    with pytest.raises(ConfigurationError, match="run `auditrelay db upgrade`"):
        checked_engine(settings.database_url)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    engine.dispose()
    checked_engine(settings.database_url).dispose()


def test_the_api_refuses_to_start_on_a_schema_behind(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as refused:
        create_api_app(behind_settings(tmp_path), publish=False)
    assert str(refused.value) == BEHIND_MESSAGE


@pytest.mark.parametrize("register", [archive.register, retention.register, pipeline.register],
                         ids=["archive", "retention", "delivery"])
def test_each_worker_stage_with_a_database_refuses_to_start_on_a_schema_behind(
        tmp_path: Path, register: Registrar) -> None:
    settings = behind_settings(tmp_path)
    with pytest.raises(ConfigurationError) as refused:
        create_worker_app(settings, app_id="unit-migrations", registrars=[register])
    assert str(refused.value) == BEHIND_MESSAGE
