"""confluent-kafka produces, a Faust agent consumes, through the real broker."""

from __future__ import annotations

import asyncio

import faust
import pytest
from confluent_kafka import Producer

from auditrelay.agents.app import create_app
from auditrelay.schemas.settings import Settings


async def _wait_for(predicate: object, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met before the deadline")
        await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_agent_receives_what_confluent_kafka_produced(
        kafka_bootstrap: str, topic: str, unique_name: str) -> None:
    settings = Settings(kafka_bootstrap=kafka_bootstrap)
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
        await _wait_for(lambda: len(received) >= len(sent), timeout=30)
    finally:
        await app.stop()

    assert sorted((k, v) for k, v, _ in received) == sorted(sent)
    assert {t for _, _, t in received} == {"pro.atmos.x.y"}
    # Per key, Kafka keeps the produced order.
    for key in {k for k, _ in sent}:
        assert [v for k, v, _ in received if k == key] == [v for k, v in sent if k == key]
