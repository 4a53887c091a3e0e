"""auditrelay.kafka.topic_reader against the real broker: reading a topic to its end."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from auditrelay.kafka.topic_reader import read_to_end, read_topic, start_reading
from auditrelay.schemas.errors import TopicError
from tests.integration.conftest import TopicFactory
from tests.support.polling import wait_until


@pytest.fixture
def consumer(kafka_bootstrap: str, group_id: str) -> Iterator[Consumer]:
    kafka = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group_id,
                      "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    yield kafka
    kafka.close()


def produce(bootstrap: str, topic: str, records: list[tuple[int, bytes, bytes | None]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for partition, key, value in records:
        producer.produce(topic, key=key, value=value, partition=partition)
    assert producer.flush(30) == 0


def test_reads_every_partition_to_its_end_with_tombstones_and_an_empty_partition(
        kafka_bootstrap: str, topic: str) -> None:
    produce(kafka_bootstrap, topic, [(0, b"a", b"1"), (0, b"b", b"2"), (0, b"a", None),
                                     (1, b"c", b"3")])  # partition 2 stays empty
    read = [(m.partition(), m.offset(), m.key(), m.value())
            for m in read_topic(kafka_bootstrap, topic, timeout=30)]
    assert sorted(read, key=lambda r: (r[0], r[1])) == [
        (0, 0, b"a", b"1"), (0, 1, b"b", b"2"), (0, 2, b"a", None), (1, 0, b"c", b"3")]


def test_an_empty_topic_reads_as_nothing_at_once(kafka_bootstrap: str, topic: str) -> None:
    assert read_topic(kafka_bootstrap, topic, timeout=30) == []


def test_records_written_after_the_start_are_not_waited_for(
        kafka_bootstrap: str, topic: str, consumer: Consumer) -> None:
    produce(kafka_bootstrap, topic, [(0, b"k", b"before")])
    reader = read_to_end(consumer, topic, timeout=30)
    first = next(reader)  # the ends are noted when reading starts
    produce(kafka_bootstrap, topic, [(1, b"k", b"after")])
    assert first.value() == b"before"
    assert [m.value() for m in reader] == []


def test_a_transaction_marker_at_the_end_does_not_hold_the_reader(
        kafka_bootstrap: str, make_topic: TopicFactory) -> None:
    # The commit marker takes the last offset but is never delivered: the position says
    # the partition is done.
    topic = make_topic("tx", partitions=1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap,
                         "transactional.id": f"test-{uuid.uuid4()}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"v")
    producer.commit_transaction(30)
    # The coordinator writes the commit marker after it answered the commit: until then a
    # read_committed reader (librdkafka's default) sees an end of 0, the stable offset.
    probe = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"probe-{uuid.uuid4()}"})
    try:
        wait_until(lambda: probe.get_watermark_offsets(TopicPartition(topic, 0), timeout=5)[1]
                   == 2, 30, "the commit marker was never written")
    finally:
        probe.close()
    read = read_topic(kafka_bootstrap, topic, timeout=10)
    assert [m.value() for m in read] == [b"v"]


def test_from_committed_reads_only_what_follows_the_groups_commit(
        kafka_bootstrap: str, topic: str, consumer: Consumer) -> None:
    produce(kafka_bootstrap, topic, [(0, b"k", b"1"), (0, b"k", b"2")])
    assert [m.value() for m in read_to_end(consumer, topic, from_committed=True)] == [b"1", b"2"]
    consumer.commit(asynchronous=False)
    produce(kafka_bootstrap, topic, [(0, b"k", b"3"), (2, b"k", b"4")])
    again = sorted(m.value() for m in read_to_end(consumer, topic, from_committed=True))
    assert again == [b"3", b"4"]
    consumer.commit(asynchronous=False)
    assert list(read_to_end(consumer, topic, from_committed=True)) == []


def test_start_reading_assigns_every_partition_from_the_beginning(
        kafka_bootstrap: str, topic: str, consumer: Consumer) -> None:
    produce(kafka_bootstrap, topic, [(1, b"k", b"1"), (1, b"k", b"2")])
    progress = start_reading(consumer, topic, timeout=30)
    assert progress.behind == {1}
    assert sorted(tp.partition for tp in consumer.assignment()) == [0, 1, 2]


def test_a_missing_topic_is_a_topic_error(kafka_bootstrap: str, unique_name: str) -> None:
    with pytest.raises(TopicError, match="does not exist"):
        read_topic(kafka_bootstrap, f"test.{unique_name}.missing", timeout=10)
