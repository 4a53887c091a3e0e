"""RegistryFollower against the real broker: catching up, then following changes."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from auditrelay.schemas.errors import BrokerUnavailableError
from auditrelay.tables.registry import RegistryFollower
from tests.integration.conftest import TopicFactory
from tests.support.polling import wait_until
from tests.unit.tables.test_registry import config, raw


def test_catches_up_then_follows_versions_and_tombstones(
        kafka_bootstrap: str, make_topic: TopicFactory) -> None:
    topic = make_topic("destinations", partitions=1, **{"cleanup.policy": "compact"})
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    for dest_id in ("dst_a", "dst_b", "dst_c"):
        producer.produce(topic, key=dest_id.encode(), value=raw(config(dest_id)))
    producer.produce(topic, key=b"dst_a", value=raw(config("dst_a", version=2, enabled=False)))
    producer.produce(topic, key=b"dst_c", value=None)  # deleted
    producer.produce(topic, key=b"dst_x", value=b"not json")  # ignored, not fatal
    assert producer.flush(30) == 0

    follower = RegistryFollower(kafka_bootstrap, topic).start()
    try:
        follower.wait_caught_up(30)
        registry = follower.registry
        got = registry.get("dst_a")
        assert got is not None
        assert got.version == 2
        assert registry.get("dst_c") is None
        assert [c.id for c in registry.matching("ws_a", "pro.atmos.x.y")] == ["dst_b"]

        producer.produce(topic, key=b"dst_b", value=None)
        producer.produce(topic, key=b"dst_d", value=raw(config("dst_d")))
        assert producer.flush(30) == 0
        wait_until(lambda: registry.get("dst_d") is not None and registry.get("dst_b") is None,
                   30, "the follower applied dst_b's tombstone and dst_d", interval=0.02)
        assert [c.id for c in registry.matching("ws_a", "pro.atmos.x.y")] == ["dst_d"]
    finally:
        follower.stop()
    assert not follower.running


def test_an_empty_topic_is_caught_up_at_once(kafka_bootstrap: str,
                                             make_topic: TopicFactory) -> None:
    topic = make_topic("destinations", partitions=1)
    follower = RegistryFollower(kafka_bootstrap, topic).start()
    try:
        follower.wait_caught_up(30)
        assert len(follower.registry) == 0
    finally:
        follower.stop()


@pytest.mark.slow
def test_a_missing_topic_times_out_with_broker_unavailable(
        kafka_bootstrap: str, unique_name: str) -> None:
    follower = RegistryFollower(kafka_bootstrap, f"test.{unique_name}.missing").start()
    try:
        with pytest.raises(BrokerUnavailableError, match="did not catch up"):
            follower.wait_caught_up(1.5)
    finally:
        follower.stop()
    assert not follower.running
