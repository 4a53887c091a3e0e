"""The producer across broker outages, on a private broker (never the shared one).

A second single-node Kafka on 127.0.0.1:19192/19193 with its own data under a
temporary directory is stopped and started here; the shared broker on 9092
that other tests and people use is not touched.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from auditrelay.kafka.admin import admin_client, create_topics
from auditrelay.ops.kafka_local import LocalKafka
from auditrelay.producer import Actor, AuditProducer, DeliveryResult, ProducerConfig
from auditrelay.schemas.errors import ProduceError
from auditrelay.schemas.settings import DEFAULT_KAFKA_VERSION
from auditrelay.schemas.topics import TopicSpec
from tests.support.pipeline import read_records

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

USER = Actor(id="usr_outage", type="user")
OUTAGE_SECONDS = 20.0


@pytest.fixture(scope="module")
def private_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    broker = LocalKafka(
        version=DEFAULT_KAFKA_VERSION, port=19192, controller_port=19193, heap_mb=384,
        home=tmp_path_factory.mktemp("private-kafka"),
        cache=Path(f".cache/kafka/{DEFAULT_KAFKA_VERSION}").resolve(),
        start_timeout=90.0,
    )
    try:
        broker.up()
        yield broker
    finally:
        broker.down()


@pytest.fixture
def outage_topic(private_broker: LocalKafka, unique_name: str) -> str:
    private_broker.up()  # a previous test may have left it stopped
    name = f"test.{unique_name}"
    create_topics(admin_client(private_broker.bootstrap), [TopicSpec(name, 3)])
    return name


def event_ids_in(bootstrap: str, topic: str, expected: int, timeout: float = 60.0) -> list[str]:
    """Every event id in the topic, duplicates included (reads on 2 s past ``expected``)."""
    records = read_records(bootstrap, topic, lambda seen: len(seen) >= expected, timeout,
                           settle=2.0)
    return [bytes(dict(msg.headers() or [])["ce_id"]).decode() for msg in records]


def test_a_twenty_second_outage_loses_nothing_duplicates_nothing_and_raises_nothing(
    private_broker: LocalKafka, outage_topic: str
) -> None:
    results: list[DeliveryResult] = []
    config = ProducerConfig(bootstrap_servers=private_broker.bootstrap, topic=outage_topic)
    emitted: list[str] = []
    with AuditProducer(config, on_delivery=results.append) as producer:
        for i in range(300):
            emitted.append(producer.emit(f"ws_o{i % 5}", "lock", "acquired", actor=USER).id)
        producer.flush(timeout=30)

        assert private_broker.down()
        stopped_at = time.monotonic()
        i = 0
        while time.monotonic() - stopped_at < OUTAGE_SECONDS:
            emitted.append(producer.emit(f"ws_o{i % 5}", "lock", "released", actor=USER).id)
            i += 1
            producer.poll(0.02)  # serves callbacks and paces the run at ~50 events/s
        assert private_broker.up()
        for j in range(300):  # and the run goes on after the restart
            emitted.append(producer.emit(f"ws_o{j % 5}", "lock", "acquired", actor=USER).id)
        producer.flush(timeout=120)

    assert [r for r in results if not r.ok] == []
    assert sorted(r.event_id for r in results) == sorted(emitted)
    in_topic = event_ids_in(private_broker.bootstrap, outage_topic, expected=len(emitted))
    assert len(in_topic) == len(set(in_topic)), "duplicates in the topic"
    assert sorted(in_topic) == sorted(emitted)
    assert i >= 500  # events really were emitted during the outage


def test_an_outage_longer_than_the_delivery_timeout_fails_each_undelivered_event(
    private_broker: LocalKafka, outage_topic: str
) -> None:
    results: list[DeliveryResult] = []
    config = ProducerConfig(bootstrap_servers=private_broker.bootstrap, topic=outage_topic,
                            delivery_timeout_ms=3000)
    producer = AuditProducer(config, on_delivery=results.append)
    delivered = [producer.emit("ws_o1", "lock", "acquired", actor=USER).id for _ in range(20)]
    producer.flush(timeout=30)
    try:
        assert private_broker.down()
        lost = [producer.emit("ws_o1", "lock", "released", actor=USER).id for _ in range(50)]
        producer.flush(timeout=60)  # returns once every event is confirmed or failed
    finally:
        private_broker.up()
    producer.close(timeout=30)

    failures = {r.event_id: r.error for r in results if not r.ok}
    assert set(failures) == set(lost)
    assert all(isinstance(error, ProduceError) for error in failures.values())
    assert {r.event_id for r in results if r.ok} == set(delivered)
    in_topic = event_ids_in(private_broker.bootstrap, outage_topic, expected=len(delivered))
    assert sorted(in_topic) == sorted(delivered)


def test_without_a_callback_the_caller_gets_the_error_from_flush(
    private_broker: LocalKafka, outage_topic: str
) -> None:
    config = ProducerConfig(bootstrap_servers=private_broker.bootstrap, topic=outage_topic,
                            delivery_timeout_ms=2000)
    producer = AuditProducer(config)
    producer.emit("ws_o2", "lock", "acquired", actor=USER)
    producer.flush(timeout=30)
    try:
        assert private_broker.down()
        lost = [producer.emit("ws_o2", "lock", "released", actor=USER).id for _ in range(3)]
        with pytest.raises(ProduceError, match="3 event") as caught:
            producer.flush(timeout=60)
        assert all(event_id in str(caught.value) for event_id in lost)
    finally:
        private_broker.up()
        producer.close(timeout=30)
