"""confluent-kafka produces, a Faust agent consumes, through the real broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import faust
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from auditrelay.agents.app import create_app
from auditrelay.schemas.settings import Settings
from tests.support.cleanup import topics_cleaned_up
from tests.support.polling import eventually
from tests.support.settings import make_settings


@pytest.fixture
def settings(kafka_bootstrap: str, kafka_admin: AdminClient, unique_name: str,
             tmp_path: Path) -> Iterator[Settings]:
    """This test's settings; the internal topics of its Faust app are deleted after."""
    settings = make_settings(tmp_path, kafka_bootstrap, f"test.{unique_name}.")
    with topics_cleaned_up(kafka_admin, settings.topics, f"test-{unique_name}-"):
        yield settings


@pytest.mark.asyncio
async def test_agent_receives_what_confluent_kafka_produced(
        settings: Settings, kafka_bootstrap: str, topic: str, unique_name: str) -> None:
    app = create_app(settings, app_id=f"test-{unique_name}")
    received: list[tuple[bytes | None, bytes, str]] = []

    @app.agent(app.topic(topic, key_serializer="raw", value_serializer="raw"))
    async def collect(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            headers = dict(event.message.headers or [])
            received.append((event.key, event.value, headers.get("ce_type", b"").decode()))

    await app.start()
    try:
        producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
        sent = [(f"ws{i % 3}".encode(), f"event-{i}".encode()) for i in range(30)]
        for key, value in sent:
            producer.produce(topic, key=key, value=value, headers=[("ce_type", b"pro.atmos.x.y")])
        assert producer.flush(10) == 0
        await eventually(lambda: len(received) >= len(sent), 30, "every record received",
                         interval=0.05)
    finally:
        await app.stop()

    assert sorted((k, v) for k, v, _ in received) == sorted(sent)
    assert {t for _, _, t in received} == {"pro.atmos.x.y"}
    # Per key, Kafka keeps the produced order.
    for key in {k for k, _ in sent}:
        assert [v for k, v, _ in received if k == key] == [v for k, v in sent if k == key]
