"""Producer behaviour without a broker: config, refusals, full queue, undeliverable events.

"Offline" means the bootstrap address is a closed loopback port, so librdkafka
runs for real and every delivery fails after the (short) delivery timeout.
"""

from __future__ import annotations

import time

import pytest

from auditrelay.producer import (
    Actor,
    AsyncAuditProducer,
    AuditProducer,
    DeliveryResult,
    ProducerConfig,
)
from auditrelay.schemas.errors import (
    ConfigurationError,
    InvalidEventError,
    ProduceError,
    QueueFullError,
)
from auditrelay.schemas.settings import Settings

USER = Actor(id="usr_1", type="user")
NOWHERE = "127.0.0.1:1"


def offline(**more: object) -> ProducerConfig:
    return ProducerConfig(bootstrap_servers=NOWHERE, topic="test.offline",
                          delivery_timeout_ms=1000, **more)  # type: ignore[arg-type]


def test_config_from_settings_uses_the_contract_names() -> None:
    settings = Settings(kafka_bootstrap="k:1", topic_prefix="x.", event_type_prefix="com.ex",
                        source_base_url="https://s.example", allow_unknown_event_types=True)
    config = ProducerConfig.from_settings(settings, linger_ms=1)
    assert (config.bootstrap_servers, config.topic, config.type_prefix) == ("k:1", "x.events",
                                                                             "com.ex")
    assert config.allow_unknown_event_types
    kafka = config.kafka_config()
    assert kafka["enable.idempotence"] is True
    assert kafka["acks"] == "all"
    assert kafka["message.timeout.ms"] == 120_000
    assert kafka["linger.ms"] == 1


def test_guarantees_cannot_be_overridden() -> None:
    with pytest.raises(ValueError, match=r"acks, enable\.idempotence"):
        ProducerConfig(librdkafka={"enable.idempotence": False, "acks": "1"})


def test_invalid_librdkafka_setting_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        AuditProducer(ProducerConfig(librdkafka={"no.such.setting": "1"}))


def test_invalid_type_prefix_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        AuditProducer(ProducerConfig(type_prefix="Not A Prefix"))


def test_full_queue_waits_its_bound_then_raises_queue_full_error() -> None:
    producer = AuditProducer(offline(queue_max_messages=3, queue_full_timeout_seconds=0.3))
    for _ in range(3):
        producer.emit("ws_xyz", "lock", "acquired", actor=USER)
    started = time.monotonic()
    with pytest.raises(QueueFullError, match="stayed full"):
        producer.emit("ws_xyz", "lock", "acquired", actor=USER)
    assert time.monotonic() - started >= 0.3
    with pytest.raises(ProduceError, match="3 event"):
        producer.close(timeout=10)


def test_undeliverable_events_reach_the_callback_each_as_a_produce_error() -> None:
    results: list[DeliveryResult] = []
    producer = AuditProducer(offline(), on_delivery=results.append)
    ids = {producer.emit("ws_xyz", "lock", "acquired", actor=USER).id for _ in range(5)}
    producer.flush(timeout=10)  # the callback took the failures: flush does not raise
    assert {r.event_id for r in results} == ids
    assert all(isinstance(r.error, ProduceError) and not r.ok for r in results)
    assert "MSG_TIMED_OUT" in str(results[0].error)
    assert producer.failed == 5
    producer.close()


def test_without_a_callback_flush_raises_naming_the_failed_events() -> None:
    producer = AuditProducer(offline())
    first = producer.emit("ws_xyz", "lock", "acquired", actor=USER)
    with pytest.raises(ProduceError, match=first.id):
        producer.flush(timeout=10)
    producer.flush(timeout=1)  # reported once, not again
    producer.close()
    with pytest.raises(ProduceError, match="closed"):
        producer.emit("ws_xyz", "lock", "acquired", actor=USER)


def test_invalid_event_is_not_queued() -> None:
    producer = AuditProducer(offline())
    with pytest.raises(InvalidEventError):
        producer.emit("ws_xyz", "lock", "acquired")
    producer.close(timeout=3)  # a queued event would have timed out and made this raise
    assert producer.failed == 0


@pytest.mark.asyncio
async def test_async_futures_raise_produce_error_for_undelivered_events() -> None:
    async with AsyncAuditProducer(offline()) as producer:
        futures = [await producer.enqueue("ws_xyz", "lock", "acquired", actor=USER)
                   for _ in range(3)]
        for future in futures:
            with pytest.raises(ProduceError, match="MSG_TIMED_OUT"):
                await future
        with pytest.raises(ProduceError):
            await producer.emit("ws_xyz", "lock", "released", actor=USER)


@pytest.mark.asyncio
async def test_async_full_queue_raises_queue_full_error() -> None:
    producer = AsyncAuditProducer(offline(queue_max_messages=2, queue_full_timeout_seconds=0.2))
    with pytest.raises(ProduceError, match="not started"):
        await producer.enqueue("ws_xyz", "lock", "acquired", actor=USER)
    async with producer:
        futures = [await producer.enqueue("ws_xyz", "lock", "acquired", actor=USER)
                   for _ in range(2)]
        with pytest.raises(QueueFullError):
            await producer.enqueue("ws_xyz", "lock", "acquired", actor=USER)
        for future in futures:
            with pytest.raises(ProduceError):
                await future
