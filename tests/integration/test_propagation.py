"""Destination changes reach Kafka: config records, self-audit events, resync.

A destination has no topic of its own (its batches are keyed on ``audit.deliveries``):
nothing creates or deletes one.

Each test has its own topic prefix, so nothing lands in the real ``audit.`` topics.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from auditrelay.api.app import create_app
from auditrelay.kafka.admin import admin_client
from auditrelay.ops.kafka_local import LocalKafka
from auditrelay.ops.topics import ensure_topics
from auditrelay.schemas.codec import parse_event
from auditrelay.schemas.settings import Settings
from auditrelay.store.engine import upgrade_database
from auditrelay.wire.ssrf import IPAddress
from tests.support.cleanup import topics_cleaned_up
from tests.support.polling import wait_until
from tests.support.servers import serve
from tests.support.settings import make_settings

ADMIN = "admin-token-for-tests-0123456789abcdef"
PUBLIC = ipaddress.ip_address("93.184.216.34")


def _resolver(host: str, port: int) -> list[IPAddress]:
    return [PUBLIC]


def _settings(tmp_path: Path, bootstrap: str, prefix: str) -> Settings:
    """Settings of one test; their database is upgraded, as before a deployment's API starts."""
    # No secret key: the API keeps its development key in var_dir, where the
    # ``destinations resync`` command, given the same var_dir, finds it too.
    settings = make_settings(tmp_path, bootstrap, prefix, topic_partitions=1,
                             admin_token=ADMIN, secret_key=None)
    upgrade_database(settings.database_url)
    return settings


class Tail:
    """Reads a topic from the beginning, collecting (key, value) pairs as they arrive."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.records: list[tuple[str, bytes | None]] = []
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"tail-{topic}",
                                   "auto.offset.reset": "earliest", "enable.auto.commit": False,
                                   "log_level": 0})
        self._consumer.subscribe([topic])

    def wait_for(self, predicate: Callable[[list[tuple[str, bytes | None]]], bool],
                 timeout: float) -> float:
        """Poll until ``predicate(records)``; returns the seconds it took."""
        started = time.monotonic()

        def seen() -> bool:
            if predicate(self.records):
                return True
            msg = self._consumer.poll(0.1)  # waiting for the next record paces the polling
            if msg is not None and msg.error() is None:
                self.records.append(((msg.key() or b"").decode(), msg.value()))
            return predicate(self.records)

        return wait_until(seen, timeout, lambda: f"{self.topic}: saw "
                          f"{[(k, v and v[:80]) for k, v in self.records]}", interval=0) - started

    def close(self) -> None:
        self._consumer.close()


def _config(records: list[tuple[str, bytes | None]], dest_id: str) -> dict[str, object] | None:
    values = [v for k, v in records if k == dest_id]
    if not values:
        return None
    return json.loads(values[-1]) if values[-1] is not None else {}


def _legacy_topics(admin: AdminClient, settings: Settings) -> list[str]:
    """Topics of the first design's per-destination layout under the test's prefix."""
    prefix = settings.topics.legacy_destination_prefix
    return sorted(t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix))


@pytest.fixture
def api_env(tmp_path: Path, kafka_bootstrap: str, kafka_admin: AdminClient,
            unique_name: str) -> Iterator[tuple[Settings, httpx.Client, str, str]]:
    settings = _settings(tmp_path, kafka_bootstrap, f"test.{unique_name}.")
    with topics_cleaned_up(kafka_admin, settings.topics):
        ensure_topics(settings)
        with serve(create_app(settings, resolver=_resolver)) as base, \
                httpx.Client(base_url=base, timeout=30) as client:
            created = client.post("/v1/workspaces", json={"name": "acme", "plan": "enterprise"},
                                  headers={"Authorization": f"Bearer {ADMIN}"})
            assert created.status_code == 201, created.text
            body = created.json()
            client.headers["Authorization"] = f"Bearer {body['token']}"
            yield settings, client, body["id"], base


def test_create_patch_delete_each_reach_kafka_within_5_s(
        api_env: tuple[Settings, httpx.Client, str, str], kafka_admin: AdminClient) -> None:
    settings, client, ws, _ = api_env
    names = settings.topics
    configs = Tail(settings.kafka_bootstrap, names.destinations)
    events = Tail(settings.kafka_bootstrap, names.events)
    try:
        created = client.post(f"/v1/workspaces/{ws}/destinations",
                              json={"name": "splunk", "url": "https://siem.example.com/in"})
        assert created.status_code == 201, created.text
        dest = created.json()["id"]
        assert configs.wait_for(lambda r: _config(r, dest) is not None, 5) < 5
        first = _config(configs.records, dest)
        assert first is not None
        assert first["enabled"] is True
        assert first["version"] == 1
        assert str(first["secret_encrypted"]).startswith("v1:")
        assert created.json()["secret"] not in json.dumps(first)
        # The outbox published the config record, and with it everything enqueued
        # before: no topic of the first design's layout among them.
        assert _legacy_topics(kafka_admin, settings) == []

        patched = client.patch(f"/v1/workspaces/{ws}/destinations/{dest}",
                               json={"enabled": False})
        assert patched.status_code == 200, patched.text
        configs.wait_for(lambda r: (_config(r, dest) or {}).get("version") == 2, 5)
        assert (_config(configs.records, dest) or {})["enabled"] is False

        assert client.delete(f"/v1/workspaces/{ws}/destinations/{dest}").status_code == 204
        configs.wait_for(lambda r: _config(r, dest) == {}, 5)  # a tombstone

        wanted = {"pro.atmos.webhook.created", "pro.atmos.webhook.updated",
                  "pro.atmos.webhook.disabled", "pro.atmos.webhook.deleted"}

        def audited(records: list[tuple[str, bytes | None]]) -> bool:
            return wanted <= {parse_event(v).type for _, v in records if v is not None}

        events.wait_for(audited, 10)
        assert all(k == ws for k, _ in events.records)
        assert _legacy_topics(kafka_admin, settings) == []
    finally:
        configs.close()
        events.close()


def test_resync_repairs_drift(api_env: tuple[Settings, httpx.Client, str, str],
                              kafka_admin: AdminClient) -> None:
    from click.testing import CliRunner

    from auditrelay.ops.cli import cli

    settings, client, ws, _ = api_env
    names = settings.topics
    created = client.post(f"/v1/workspaces/{ws}/destinations",
                          json={"name": "dd", "url": "https://dd.example.com/in"})
    dest = created.json()["id"]
    configs = Tail(settings.kafka_bootstrap, names.destinations)
    try:
        configs.wait_for(lambda r: _config(r, dest) is not None, 5)
        published = _config(configs.records, dest)
        # Drift: the destination's record was overwritten with one that is not its
        # config, and a record for a destination the database does not know sits in
        # the compacted topic.
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
        producer.produce(names.destinations, key=dest.encode(), value=b'{"id": "garbled"}')
        producer.produce(names.destinations, key=b"dst_ghost", value=b'{"id": "dst_ghost"}')
        assert producer.flush(10) == 0
        configs.wait_for(lambda r: _config(r, dest) == {"id": "garbled"}, 5)

        env = {f"AUDITRELAY_{k.upper()}": str(v) for k, v in {
            "kafka_bootstrap": settings.kafka_bootstrap, "topic_prefix": settings.topic_prefix,
            "var_dir": settings.var_dir, "database_url": settings.database_url}.items()}
        result = CliRunner().invoke(cli, ["destinations", "resync"], env=env,
                                    obj=None, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert "tombstoned  dst_ghost" in result.output
        assert f"republished {dest}" in result.output

        configs.wait_for(lambda r: _config(r, "dst_ghost") == {}, 10)
        configs.wait_for(lambda r: _config(r, dest) == published, 10)
        assert _legacy_topics(kafka_admin, settings) == []
        again = CliRunner().invoke(cli, ["destinations", "resync"], env=env,
                                   catch_exceptions=False)
        assert again.output.strip().endswith("in sync"), again.output
    finally:
        configs.close()


@pytest.mark.slow
def test_a_change_accepted_while_kafka_is_down_is_published_when_it_returns(
        tmp_path: Path, kafka_bootstrap: str) -> None:
    shared = LocalKafka.from_settings(Settings())
    broker = LocalKafka(version=shared.version, port=19692, controller_port=19693, heap_mb=256,
                        home=tmp_path / "kafka", cache=shared.cache, start_timeout=90.0)
    try:
        broker.up()
        settings = _settings(tmp_path, broker.bootstrap, "audit.")
        ensure_topics(settings)
        with serve(create_app(settings, resolver=_resolver)) as base, \
                httpx.Client(base_url=base, timeout=30) as client:
            ws = client.post("/v1/workspaces", json={"name": "acme", "plan": "enterprise"},
                             headers={"Authorization": f"Bearer {ADMIN}"}).json()
            client.headers["Authorization"] = f"Bearer {ws['token']}"
            broker.down()
            created = client.post(f"/v1/workspaces/{ws['id']}/destinations",
                                  json={"name": "while-down", "url": "https://x.example.com/"})
            assert created.status_code == 201, created.text
            dest = created.json()["id"]
            broker.up()
            configs = Tail(broker.bootstrap, settings.topics.destinations)
            events = Tail(broker.bootstrap, settings.topics.events)
            try:
                configs.wait_for(lambda r: _config(r, dest) is not None, 60)
                assert (_config(configs.records, dest) or {})["enabled"] is True
                # The self-audit event accepted in the same transaction follows it.
                events.wait_for(lambda r: any(
                    v is not None and parse_event(v).type == "pro.atmos.webhook.created"
                    for _, v in r), 30)
            finally:
                configs.close()
                events.close()
            assert _legacy_topics(admin_client(broker.bootstrap), settings) == []
    finally:
        broker.down()


def test_status_fields_and_deliveries_come_from_the_status_topics(
        api_env: tuple[Settings, httpx.Client, str, str]) -> None:
    from datetime import UTC, datetime

    from auditrelay.schemas.status import DeliveryAttempt, DestinationStatus

    settings, client, ws, _ = api_env
    names = settings.topics
    dest = client.post(f"/v1/workspaces/{ws}/destinations",
                       json={"name": "s", "url": "https://s.example.com/"}).json()["id"]
    now = datetime.now(UTC)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for n, (code, outcome) in enumerate(((503, "retry"), (200, "delivered"))):
        attempt = DeliveryAttempt(destination_id=dest, workspace_id=ws, batch_id=f"msg_{n}",
                                  attempt=n + 1, events=3, at=now, outcome=outcome,
                                  status_code=code, latency_ms=12,
                                  error="HTTP 503" if code == 503 else None)
        producer.produce(names.delivery_attempts, key=dest.encode(),
                         value=attempt.model_dump_json().encode())
    status = DestinationStatus(destination_id=dest, workspace_id=ws, state="ok",
                               last_delivery_at=now, last_delivery_ok=True, last_status_code=200,
                               updated_at=now)
    producer.produce(names.delivery_status, key=dest.encode(),
                     value=status.model_dump_json().encode())
    assert producer.flush(10) == 0

    shown: dict[str, Any] = {}

    def both_shown() -> bool:
        shown["read"] = client.get(f"/v1/workspaces/{ws}/destinations/{dest}").json()
        shown["deliveries"] = client.get(
            f"/v1/workspaces/{ws}/destinations/{dest}/deliveries").json()
        return shown["read"]["last_delivery_ok"] is True and len(
            shown["deliveries"]["items"]) == 2

    wait_until(both_shown, 15, lambda: repr(shown), interval=0.2)
    read, deliveries = shown["read"], shown["deliveries"]
    assert read["last_delivery_at"] is not None
    assert read["last_error"] is None
    assert [d["batch_id"] for d in deliveries["items"]] == ["msg_1", "msg_0"]
    assert deliveries["items"][1]["error"] == "HTTP 503"
    other = client.get(f"/v1/workspaces/{ws}/destinations/dst_nope/deliveries")
    assert other.status_code == 404
