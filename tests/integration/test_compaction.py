"""A compacted topic keeps the latest value per key (short segment settings, real broker).

The contract's compacted topics (``audit.destinations``, ``audit.delivery-status``)
rely on this: a reader from the beginning sees each key's latest record only once
the cleaner has run. The local broker runs the cleaner every second
(``log.cleaner.backoff.ms=1000``); the topic rolls a segment every 100 ms.
"""

from __future__ import annotations

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from auditrelay.kafka.admin import describe_configs
from auditrelay.kafka.topic_reader import read_topic
from tests.integration.conftest import TopicFactory
from tests.support.polling import wait_until

KEYS = [f"dest_{i}" for i in range(8)]
VERSIONS = 5


def read_all_records(bootstrap: str, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """Every record now in the log, from the beginning to the current end."""
    return [(msg.key(), msg.value()) for msg in read_topic(bootstrap, topic, timeout=30)]


def test_compacted_topic_keeps_the_latest_value_per_key(make_topic: TopicFactory,
                                                        kafka_bootstrap: str,
                                                        kafka_admin: AdminClient) -> None:
    topic = make_topic("compact", partitions=1, **{
        "cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01",
        "min.compaction.lag.ms": "0", "delete.retention.ms": "100"})
    assert describe_configs(kafka_admin, [topic])[topic]["cleanup.policy"] == "compact"
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 0})
    for version in range(1, VERSIONS + 1):
        for key in KEYS:
            producer.produce(topic, key=key.encode(), value=f"v{version}".encode())
    assert producer.flush(10) == 0

    records: list[tuple[bytes | None, bytes | None]] = []

    def compacted() -> bool:
        # Each tick rolls the segment holding the versions, so the cleaner may take it.
        producer.produce(topic, key=b"tick", value=b"")
        assert producer.flush(10) == 0
        records[:] = [(k, v) for k, v in read_all_records(kafka_bootstrap, topic)
                      if k != b"tick"]
        return len(records) == len(KEYS)

    wait_until(compacted, 90, lambda: f"not compacted: {len(records)} records remain",
               interval=0.5)
    assert sorted(records) == sorted((k.encode(), f"v{VERSIONS}".encode()) for k in KEYS)
