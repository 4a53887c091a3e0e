from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from auditrelay.schemas.destinations import DestinationConfig
from auditrelay.schemas.settings import Settings
from auditrelay.store.db import Destination, OutboxEntry, Workspace
from auditrelay.store.engine import Store, make_engine, upgrade_database
from auditrelay.store.mutations import disable_destination

BEFORE = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(var_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/db.sqlite",
                    topic_prefix="t.")


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    upgrade_database(settings.database_url)
    store = Store(make_engine(settings.database_url))
    with store.transaction() as session:
        session.add(Workspace(id="ws_one", name="one", plan="enterprise"))
        session.flush()
        session.add(Destination(id="dst_1", workspace_id="ws_one", name="siem",
                                url_encrypted="v1:u", url_hint="https://siem.example",
                                secret_encrypted="v1:s",
                                version=3, created_at=BEFORE, updated_at=BEFORE))
    yield store
    store.dispose()


def outbox(store: Store) -> list[OutboxEntry]:
    with store.transaction() as session:
        return list(session.scalars(select(OutboxEntry).order_by(OutboxEntry.id)))


@pytest.mark.parametrize(("reason", "event_type"), [
    ("gone", "pro.atmos.webhook.disabled"), ("failing", "pro.atmos.webhook.auto_disabled")])
def test_disable_updates_the_row_and_enqueues_config_and_event(
        store: Store, settings: Settings, reason: str, event_type: str) -> None:
    now = BEFORE + timedelta(hours=1)
    assert disable_destination(store, settings, "dst_1", reason, detail="HTTP 410", now=now)

    with store.transaction() as session:
        dest = session.get(Destination, "dst_1")
        assert dest is not None
        assert (dest.enabled, dest.disabled_reason, dest.version) == (False, reason, 4)
        assert dest.updated_at == now
    config_entry, event_entry = outbox(store)
    assert (config_entry.topic, config_entry.key) == ("t.destinations", b"dst_1")
    assert config_entry.value is not None
    config = DestinationConfig.model_validate_json(config_entry.value)
    assert (config.enabled, config.disabled_reason, config.version) == (False, reason, 4)
    assert config.forwarding is True
    assert event_entry.topic == "t.events"
    assert event_entry.key == b"ws_one"
    assert event_entry.value is not None
    event = json.loads(event_entry.value)
    assert event["type"] == event_type
    assert event["data"]["actor"] == {"id": "auditrelay", "type": "system"}
    assert event["data"]["target"] == {"type": "destination", "id": "dst_1"}
    assert event["data"]["metadata"]["reason"] == reason
    assert ["ce_type", event_type] in (event_entry.headers or [])


def test_disabling_twice_changes_nothing_the_second_time(store: Store, settings: Settings) -> None:
    assert disable_destination(store, settings, "dst_1", "gone")
    assert not disable_destination(store, settings, "dst_1", "failing")
    assert len(outbox(store)) == 2


def test_unknown_destination_and_reason(store: Store, settings: Settings) -> None:
    assert not disable_destination(store, settings, "dst_missing", "gone")
    assert outbox(store) == []
    with pytest.raises(ValueError, match="reason"):
        disable_destination(store, settings, "dst_1", "bored")
