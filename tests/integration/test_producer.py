"""The producer through the real broker: round trip, headers, keys, refusals."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.v1.http import from_json
from confluent_kafka import Message

from auditrelay.producer import Actor, AsyncAuditProducer, AuditProducer, ProducerConfig
from auditrelay.schemas.builder import EncodedEvent
from auditrelay.schemas.codec import parse_event
from auditrelay.schemas.errors import InvalidEventError
from tests.support.pipeline import read_records

TopicFactory = Callable[..., str]
USER = Actor(id="usr_actor1", type="user")


def consume_all(bootstrap: str, topic: str, expected: int,
                timeout: float = 60.0, settle: float = 1.0) -> list[Message]:
    """Every record of ``topic``: stops ``settle`` seconds after ``expected`` were read."""
    return read_records(bootstrap, topic, lambda seen: len(seen) >= expected, timeout,
                        settle=settle)


def config_for(bootstrap: str, topic: str, **more: Any) -> ProducerConfig:
    return ProducerConfig(bootstrap_servers=bootstrap, topic=topic, **more)


def test_ten_thousand_events_come_back_byte_identical_keyed_and_valid_cloudevents(
    kafka_bootstrap: str, make_topic: TopicFactory
) -> None:
    topic = make_topic(partitions=3)
    workspaces = [f"ws_rt{i}" for i in range(7)]
    sent: dict[str, EncodedEvent] = {}
    with AuditProducer(config_for(kafka_bootstrap, topic)) as producer:
        for i in range(10_000):
            event = producer.emit(
                workspaces[i % 7], "workspace", "updated", actor=USER,
                target={"type": "workspace", "id": workspaces[i % 7]}, subject=workspaces[i % 7],
                description=f"change {i} by Zoë", metadata={"n": i, "tags": ["a", "é"]},
            )
            sent[event.id] = event
    assert producer.delivered == 10_000
    assert producer.failed == 0

    records = consume_all(kafka_bootstrap, topic, expected=10_000)
    assert len(records) == 10_000
    partition_of: dict[bytes, int] = {}
    last_id_in_partition: dict[int, str] = {}
    json_format = JSONFormat()
    for msg in records:
        headers = {name: bytes(value) for name, value in msg.headers() or []}
        event_id = headers["ce_id"].decode()
        original = sent.pop(event_id)
        assert msg.value() == original.value
        assert msg.key() == original.workspace_id.encode()
        assert headers == {
            "ce_id": event_id.encode(),
            "ce_type": b"pro.atmos.workspace.updated",
            "ce_workspaceid": original.workspace_id.encode(),
            "content-type": b"application/cloudevents+json",
        }
        # One workspace, one partition; ids grow within a partition (emission order).
        assert partition_of.setdefault(msg.key(), msg.partition()) == msg.partition()
        assert event_id > last_id_in_partition.get(msg.partition(), "")
        last_id_in_partition[msg.partition()] = event_id
        # The official SDK accepts each one as a valid v1.0 event, three ways.
        sdk_event = json_format.read(None, msg.value())
        assert sdk_event.get_specversion() == "1.0"
        assert sdk_event.get_id() == event_id
        assert sdk_event.get_extension("workspaceid") == original.workspace_id
        assert isinstance(sdk_event.get_time(), datetime)
        legacy = from_json(msg.value())
        assert legacy["type"] == "pro.atmos.workspace.updated"
        binding = ce_kafka.from_structured(ce_kafka.KafkaMessage(
            headers=headers, key=msg.key(), value=msg.value()), json_format)
        assert binding.get_source() == f"https://app.atmos.pro/workspaces/{original.workspace_id}"
        assert parse_event(msg.value()).id == event_id
    assert sent == {}


@pytest.mark.parametrize(("call", "field"), [
    ({"actor": None}, "data.actor"),
    ({"action": "exploded"}, "type"),
    ({"time": datetime(2026, 11, 25, 10, 30)}, "time"),
    ({"metadata": {"blob": "x" * (70 * 1024)}}, "data.metadata"),
    ({"workspace_id": "Workspace-1"}, "workspaceid"),
    ({"metadata": {"when": object()}}, "data.metadata"),
], ids=["missing-actor", "unknown-type", "naive-datetime", "70KiB-metadata",
        "malformed-workspace-id", "metadata-not-json"])
def test_bad_input_is_refused_naming_the_field_and_nothing_reaches_the_topic(
    kafka_bootstrap: str, make_topic: TopicFactory, call: dict[str, Any],
    field: str,
) -> None:
    topic = make_topic(partitions=1)
    args: dict[str, Any] = {"workspace_id": "ws_xyz", "category": "workspace",
                            "action": "created", "actor": USER, **call}
    with AuditProducer(config_for(kafka_bootstrap, topic)) as producer:
        with pytest.raises(InvalidEventError) as caught:
            producer.emit(args.pop("workspace_id"), args.pop("category"), args.pop("action"),
                          **args)
        assert caught.value.field == field
        assert field in str(caught.value)
        # A marker after the refusal: once it is in, anything before it would be too.
        marker = producer.emit("ws_xyz", "lock", "acquired", actor=USER)
    records = consume_all(kafka_bootstrap, topic, expected=1)
    assert [msg.value() for msg in records] == [marker.value]


@pytest.mark.asyncio
async def test_async_emit_returns_once_the_broker_confirmed(
    kafka_bootstrap: str, make_topic: TopicFactory
) -> None:
    topic = make_topic(partitions=3)
    async with AsyncAuditProducer(config_for(kafka_bootstrap, topic)) as producer:
        result = await producer.emit("ws_async", "lock", "acquired", actor=USER)
        assert result.ok
        assert result.topic == topic
        assert result.offset == 0
        futures = [await producer.enqueue("ws_async", "lock", "released", actor=USER)
                   for _ in range(500)]
        results = [await future for future in futures]
    assert [r.offset for r in results] == list(range(1, 501))
    records = consume_all(kafka_bootstrap, topic, expected=501)
    assert {r.event_id for r in [result, *results]} == {
        bytes(dict(m.headers() or [])["ce_id"]).decode() for m in records}


@pytest.mark.asyncio
async def test_async_emit_refuses_bad_input_before_queueing(
    kafka_bootstrap: str, make_topic: TopicFactory
) -> None:
    topic = make_topic(partitions=1)
    async with AsyncAuditProducer(config_for(kafka_bootstrap, topic)) as producer:
        with pytest.raises(InvalidEventError) as caught:
            await producer.emit("ws_xyz", "workspace", "created")
        assert caught.value.field == "data.actor"
        first = await producer.emit("ws_xyz", "lock", "acquired", actor=USER)
    assert first.offset == 0  # the refused event took no place in the topic
