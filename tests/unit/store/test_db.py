"""``insert_new``: one Core INSERT of a new object's row, the object left out of the session."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import inspect

from auditrelay.store.db import Destination, Workspace, insert_new
from auditrelay.store.engine import Store, make_engine, upgrade_database

WHEN = datetime(2026, 12, 3, 5, 30, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    upgrade_database(url)
    store = Store(make_engine(url))
    with store.transaction() as session:
        session.add(Workspace(id="ws_one", name="one", plan="enterprise"))
    yield store
    store.dispose()


def test_the_row_holds_what_was_given_and_the_defaults_of_the_rest(store: Store) -> None:
    dest = Destination(id="dst_1", workspace_id="ws_one", name="siem", url_encrypted="v1:u",
                       url_hint="https://siem.example", secret_encrypted="v1:s",
                       event_types=["a.*"], created_at=WHEN, updated_at=WHEN)
    with store.transaction() as session:
        insert_new(session, dest)
        assert inspect(dest).transient  # not added: the unit of work never sees it
        assert not session.new
    with store.transaction() as session:
        row = session.get(Destination, "dst_1")
        assert row is not None
        assert (row.name, row.url_hint, row.event_types, row.created_at) == (
            "siem", "https://siem.example", ["a.*"], WHEN)
        # Not given: the columns' defaults.
        assert (row.kind, row.options, row.enabled, row.version, row.description) == (
            "webhook", {}, True, 1, None)


def test_a_failed_transaction_leaves_no_row(store: Store) -> None:
    dest = Destination(id="dst_2", workspace_id="ws_one", name="siem", url_encrypted="v1:u",
                       url_hint="https://siem.example", secret_encrypted="v1:s")

    def fail_after_the_insert() -> None:
        with store.transaction() as session:
            insert_new(session, dest)
            raise RuntimeError("the route failed after the insert")

    with pytest.raises(RuntimeError):
        fail_after_the_insert()
    with store.transaction() as session:
        assert session.get(Destination, "dst_2") is None
