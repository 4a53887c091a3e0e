"""The router agent in a real Faust app against the real broker.

Producers emit through ``producer.AuditProducer`` (and a few malformed records
raw through confluent-kafka); the router runs in-process; the test reads
``audit.deliveries`` (each destination's batches by key) and the DLQ back from
the beginning.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from auditrelay.agents import router
from auditrelay.agents.app import create_app
from auditrelay.kafka.topic_reader import start_reading
from auditrelay.ops.topics import ensure_topics
from auditrelay.producer import Actor, AuditProducer, EncodedEvent, ProducerConfig
from auditrelay.schemas.batches import BatchMeta, MalformedInput
from auditrelay.schemas.settings import Settings
from tests.support.cleanup import topics_cleaned_up
from tests.support.settings import make_settings
from tests.unit.tables.test_registry import config

USER = Actor(id="usr_1", type="user")

#: destination id -> (workspace, globs, enabled, forwarding)
DESTINATIONS: dict[str, tuple[str, tuple[str, ...], bool, bool]] = {
    "dst_all": ("ws_a", (), True, True),
    "dst_auth": ("ws_a", ("pro.atmos.auth.*",), True, True),
    "dst_off": ("ws_a", (), False, True),
    "dst_free": ("ws_free", (), True, False),
    "dst_b": ("ws_b", (), True, True),
}


@pytest.fixture
def settings(kafka_bootstrap: str, kafka_admin: AdminClient, unique_name: str,
             tmp_path: Path) -> Iterator[Settings]:
    """Topics of the contract under a prefix of this test's own; deleted afterwards."""
    settings = make_settings(tmp_path, kafka_bootstrap, f"test.{unique_name}.",
                             topic_partitions=2, batch_window_seconds=0.2)
    # Also the internal topics of the tests' Faust apps (app id ``test-{unique_name}``).
    with topics_cleaned_up(kafka_admin, settings.topics, f"test-{unique_name}-"):
        ensure_topics(settings)
        yield settings


def publish_configs(settings: Settings) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for dest_id, (workspace, globs, enabled, forwarding) in DESTINATIONS.items():
        cfg = config(dest_id, workspace, enabled=enabled, forwarding=forwarding,
                     event_types=globs)
        producer.produce(settings.topics.destinations, key=dest_id.encode(),
                         value=cfg.model_dump_json().encode())
    assert producer.flush(30) == 0


def emit(settings: Settings, plan: list[tuple[str, str, str]]) -> list[EncodedEvent]:
    with AuditProducer(ProducerConfig.from_settings(settings)) as producer:
        built = [producer.emit(ws, category, action, actor=USER) for ws, category, action in plan]
        producer.flush(30)
    return built


def emit_malformed(settings: Settings) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    records = [
        (b"ws_a", b"this is not an event", [("ce_id", b"aud_01JD7Q0Z8N6Y0F3X5KQ2M1V9RT"),
                                            ("ce_type", b"pro.atmos.auth.logged_out"),
                                            ("ce_workspaceid", b"ws_a")]),
        (b"ws_a", b"{}", [("ce_type", b"pro.atmos.auth.logged_out"),
                          ("ce_workspaceid", b"ws_a")]),
        (b"ws_b", b"{}", [("ce_id", b"aud_01JD7Q0Z8N6Y0F3X5KQ2M1V9RT"),
                          ("ce_type", b"pro.atmos.auth.logged_out"),
                          ("ce_workspaceid", b"ws_a")]),
    ]
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for key, value, headers in records:
        producer.produce(settings.topics.events, key=key, value=value, headers=headers)
    assert producer.flush(30) == 0
    return records


class TopicReader:
    """Reads a topic from the beginning, keeping everything read so far."""

    def __init__(self, bootstrap: str, topic: str, group: str) -> None:
        self.records: list[Any] = []
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                                   "enable.auto.commit": False})
        start_reading(self._consumer, topic, timeout=30)

    def of(self, key: str) -> list[Any]:
        """The records read so far with this key."""
        return [m for m in self.records if m.key() == key.encode()]

    def poll(self) -> None:
        for msg in self._consumer.consume(1000, timeout=0.05):
            assert msg.error() is None, msg.error()
            self.records.append(msg)

    def close(self) -> None:
        self._consumer.close()


async def read_until(readers: list[TopicReader], done: Callable[[], bool],
                     timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        for reader in readers:
            await asyncio.to_thread(reader.poll)
        if done():
            return
        assert asyncio.get_running_loop().time() < deadline, "records did not arrive in time"
        await asyncio.sleep(0.05)


def events_of(records: list[Any]) -> list[bytes]:
    """The envelopes of every batch read, as bytes exactly as they were in the body."""
    out = []
    for msg in records:
        body = msg.value()
        count = len(json.loads(body))
        meta = BatchMeta.from_headers(msg.headers())
        assert meta.events == count <= 100
        assert body.startswith(b"[")
        assert body.endswith(b"]")
        out.append(body)
    return out


def split_body(body: bytes, candidates: dict[str, bytes]) -> list[bytes]:
    """Cut a batch body back into the producers' event bytes (verifying each is there)."""
    ids = [e["id"] for e in json.loads(body)]
    parts = [candidates[i] for i in ids]
    assert body == b"[" + b",".join(parts) + b"]"
    return parts


@pytest.mark.slow
@pytest.mark.asyncio
async def test_router_batches_filters_and_dead_letters(settings: Settings, unique_name: str,
                                                       kafka_admin: AdminClient) -> None:
    topics = settings.topics
    publish_configs(settings)
    plan = ([("ws_a", "auth", "login_succeeded"), ("ws_a", "billing", "payment_failed"),
             ("ws_a", "lock", "acquired")] * 90
            + [("ws_free", "auth", "login_failed")] * 20
            + [("ws_b", "workflow", "started")] * 30
            + [("ws_nobody", "auth", "logged_out")] * 5)
    first = emit(settings, plan)
    malformed = emit_malformed(settings)

    app = create_app(settings, app_id=f"test-{unique_name}", registrars=[router.register])
    deliveries = TopicReader(settings.kafka_bootstrap, topics.deliveries,
                             f"test-read-{unique_name}-deliveries")
    dlq = TopicReader(settings.kafka_bootstrap, topics.dlq, f"test-read-{unique_name}-dlq")
    all_readers = [deliveries, dlq]

    def total(dest: str) -> int:
        return sum(len(json.loads(m.value())) for m in deliveries.of(dest))

    await app.start()
    try:
        await read_until(all_readers, lambda: total("dst_all") >= 270 and total("dst_b") >= 30
                         and total("dst_auth") >= 90 and len(dlq.records) >= 3)
        # The agent is still running after the malformed records: more events flow.
        second = emit(settings, [("ws_a", "auth", "logged_out")] * 5)
        await read_until(all_readers, lambda: total("dst_all") >= 275)
        # Give the router a moment in which it could (wrongly) produce more.
        await asyncio.sleep(settings.batch_window_seconds * 3)
        await read_until(all_readers, lambda: True)
    finally:
        await app.stop()
        for reader in all_readers:
            reader.close()

    by_id = {e.id: e.value for e in first + second}
    ws_a = [e for e in first + second if e.workspace_id == "ws_a"]

    def received(dest: str) -> list[bytes]:
        return [part for body in events_of(deliveries.of(dest))
                for part in split_body(body, by_id)]

    # Exactly the matching events, bytes identical, in the order they were produced.
    assert received("dst_all") == [e.value for e in ws_a]
    assert received("dst_auth") == [e.value for e in ws_a if e.type.startswith("pro.atmos.auth.")]
    assert received("dst_b") == [e.value for e in first if e.workspace_id == "ws_b"]
    assert received("dst_off") == []
    assert received("dst_free") == []
    # Batch headers name the destination and workspace; batches are full when they can be.
    assert {m.key() for m in deliveries.records} == {b"dst_all", b"dst_auth", b"dst_b"}
    for dest in DESTINATIONS:
        for msg in deliveries.of(dest):
            meta = BatchMeta.from_headers(msg.headers())
            assert meta.destination_id == dest
            assert meta.workspace_id == DESTINATIONS[dest][0]
            assert meta.batch_id.startswith("msg_")
    assert max(BatchMeta.from_headers(m.headers()).events for m in deliveries.of("dst_all")) \
        == 100
    assert len({BatchMeta.from_headers(m.headers()).batch_id for m in deliveries.records}) == \
        len(deliveries.records)

    # Malformed input: in the DLQ, untouched, with the reason and where it came from.
    assert len(dlq.records) == 3
    dead = sorted((m.key(), m.value(), MalformedInput.from_headers(m.headers()))
                  for m in dlq.records)
    assert [(key, value) for key, value, _ in dead] == sorted(
        (key, value) for key, value, _ in malformed)
    details = {(key, value): info.detail for key, value, info in dead}
    assert details[(b"ws_a", b"this is not an event")].startswith("invalid event")
    assert details[(b"ws_a", b"{}")] == "header ce_id is missing"
    assert details[(b"ws_b", b"{}")] == \
        "the record key 'ws_b' differs from header ce_workspaceid 'ws_a'"
    for _, _, info in dead:
        assert info.reason == "malformed_event"
        assert info.source_topic == topics.events
        assert info.source_partition in (0, 1)


async def committed_become(settings: Settings, expected: list[int], what: str) -> None:
    """Until the router group's committed offsets, sorted, are ``expected`` (30 s at most)."""
    deadline = asyncio.get_running_loop().time() + 30
    while (found := sorted(await asyncio.to_thread(committed_offsets, settings))) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"{what}: {found}"
        await asyncio.sleep(0.1)


def committed_offsets(settings: Settings) -> list[int]:
    """The router group's committed offsets of the events topic's partitions (-1: none)."""
    probe = Consumer({"bootstrap.servers": settings.kafka_bootstrap,
                      "group.id": settings.topics.router_group, "enable.auto.commit": False})
    try:
        parts = [TopicPartition(settings.topics.events, p)
                 for p in range(settings.topic_partitions)]
        return [max(tp.offset, -1) for tp in probe.committed(parts, timeout=10)]
    finally:
        probe.close()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_full_batch_leaves_before_the_window_and_a_partial_one_holds_the_commit(
        settings: Settings, unique_name: str) -> None:
    """Issue #14: 150 events, a long window. The first 100 leave at once; the 50 of the
    partial batch hold the commit at offset 100; a worker stopped then drops them, and
    the next one reads and delivers them (at least once, in order, nothing twice)."""
    topics = settings.topics
    publish_configs(settings)
    long_window = settings.model_copy(update={"batch_window_seconds": 60.0})
    built = emit(settings, [("ws_b", "workflow", "started")] * 150)
    deliveries = TopicReader(settings.kafka_bootstrap, topics.deliveries,
                             f"test-read-{unique_name}-deliveries")

    def total() -> int:
        return sum(len(json.loads(m.value())) for m in deliveries.of("dst_b"))

    app = create_app(long_window, app_id=f"test-{unique_name}", registrars=[router.register])
    await app.start()
    try:
        await read_until([deliveries], lambda: total() >= 100, timeout=30)
        await committed_become(settings, [-1, 100], "the held offset was not committed")
    finally:
        await app.stop()
    assert total() == 100  # the partial batch was dropped, not produced
    assert sorted(committed_offsets(settings)) == [-1, 100]

    # The next worker (a short window) reads the 50 again and delivers them.
    app = create_app(settings, app_id=f"test-{unique_name}-2", registrars=[router.register])
    await app.start()
    try:
        await read_until([deliveries], lambda: total() >= 150, timeout=30)
        await committed_become(settings, [-1, 150], "not committed after all")
    finally:
        await app.stop()
        deliveries.close()
    by_id = {e.id: e.value for e in built}
    received = [part for body in events_of(deliveries.of("dst_b"))
                for part in split_body(body, by_id)]
    assert received == [e.value for e in built]
    assert [BatchMeta.from_headers(m.headers()).events for m in deliveries.of("dst_b")] == \
        [100, 50]
