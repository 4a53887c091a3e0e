"""auditrelay.kafka.topic_reader without a broker: what is left to catch up."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from auditrelay.kafka.topic_reader import CatchUp, start_reading
from auditrelay.schemas.errors import TopicError


def test_only_partitions_with_records_past_their_start_are_behind() -> None:
    progress = CatchUp.between("t", {0: 0, 1: 5, 2: 3, 3: 0}, {0: 4, 1: 5, 2: 2, 3: 0})
    assert progress.topic == "t"
    assert progress.behind == {0}  # 1 and 3 are empty, 2 starts past its end
    assert not progress.done


def test_a_start_not_given_is_the_first_offset() -> None:
    assert CatchUp.between("t", {}, {0: 1, 1: 0}).behind == {0}


def test_nothing_to_read_is_caught_up_at_once() -> None:
    assert CatchUp.between("t", {0: 7}, {0: 7}).done
    assert CatchUp("t", {}).done


def test_caught_up_once_each_partition_read_its_last_record_before_the_end() -> None:
    progress = CatchUp("t", {0: 3, 1: 2})
    progress.read(0, 1)
    progress.read(1, 1)  # offset 1 is the last before end 2
    assert progress.behind == {0}
    progress.read(0, 2)
    assert progress.done


def test_a_position_past_a_gap_at_the_end_also_counts() -> None:
    # The last records may be gone (compacted, or transaction markers): the position moves on.
    progress = CatchUp("t", {0: 10})
    progress.passed(0, 9)
    assert not progress.done
    progress.passed(0, 10)
    assert progress.done


def test_records_of_other_partitions_or_past_the_end_change_nothing() -> None:
    progress = CatchUp("t", {0: 3})
    progress.read(5, 100)
    assert progress.behind == {0}
    progress.read(0, 50)  # a record written after reading started
    assert progress.done
    progress.read(0, 51)
    assert progress.done


class _Topic:
    def __init__(self) -> None:
        self.error = None
        self.partitions = {0: object()}


class _Metadata:
    def __init__(self, topic: str) -> None:
        self.topics = {topic: _Topic()}


class _FreshTopicConsumer:
    """A consumer whose partition has no leader for its first ``not_ready`` questions,
    as a topic just created answers."""

    def __init__(self, topic: str, not_ready: int, code: int) -> None:
        self.topic = topic
        self.not_ready = not_ready
        self.code = code
        self.asked = 0
        self.assigned: list[TopicPartition] = []

    def list_topics(self, topic: str, timeout: float) -> _Metadata:
        return _Metadata(self.topic)

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float) -> tuple[int, int]:
        self.asked += 1
        if self.asked <= self.not_ready:
            raise KafkaException(KafkaError(self.code))
        return 0, 3

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions


def _start(consumer: Any, timeout: float) -> CatchUp:
    return start_reading(consumer, consumer.topic, timeout=timeout)


def test_a_partition_whose_leader_is_not_ready_yet_is_asked_again() -> None:
    consumer = _FreshTopicConsumer("t", not_ready=3, code=KafkaError.NOT_LEADER_FOR_PARTITION)
    progress = _start(consumer, timeout=5.0)
    assert consumer.asked == 4
    assert progress.behind == frozenset({0})
    assert [tp.partition for tp in consumer.assigned] == [0]


def test_a_leader_that_never_comes_is_a_topic_error_at_the_deadline() -> None:
    consumer = _FreshTopicConsumer("t", not_ready=10**6, code=KafkaError.LEADER_NOT_AVAILABLE)
    with pytest.raises(TopicError, match="cannot read t"):
        _start(consumer, timeout=0.3)
    assert consumer.asked >= 2


def test_other_errors_are_not_asked_again() -> None:
    consumer = _FreshTopicConsumer("t", not_ready=1, code=KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(TopicError):
        _start(consumer, timeout=5.0)
    assert consumer.asked == 1
