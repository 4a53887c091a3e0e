"""Reading a whole topic: from its beginning up to the end it has now, and following it after.

A reader assigns itself every partition of the topic (it joins no group, so no
rebalance ever moves them), notes each partition's end offset at that moment,
and has *caught up* once everything before those ends is read. ``CatchUp`` is
that bookkeeping, without Kafka; the aiokafka status follower
(``auditrelay.tables.status``) keeps it too. For confluent-kafka consumers:

- :func:`start_reading` assigns the partitions and returns the ``CatchUp``;
  :func:`note_positions` lets it see past records that are not there any more
  (compacted away, transaction markers), from where the consumer stands. Together
  they catch up then follow (``auditrelay.tables.registry.RegistryFollower``).
- :func:`read_to_end` yields every record up to those ends and stops;
  :func:`read_topic` does that with a throwaway consumer of its own (a snapshot).

confluent-kafka errors become ``TopicError`` here.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_STORED,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from auditrelay.kafka.backoff import Backoff
from auditrelay.schemas.errors import TopicError

__all__ = ["CatchUp", "note_positions", "read_to_end", "read_topic", "start_reading"]

#: Records taken from the consumer per call while reading to the end.
_BATCH = 500


class CatchUp:
    """The partitions of ``topic`` that still hold records from before reading started.

    ``ends``: per partition that has records to read, the offset after the last one.
    """

    def __init__(self, topic: str, ends: Mapping[int, int]) -> None:
        self.topic = topic
        self._ends = dict(ends)

    @classmethod
    def between(cls, topic: str, starts: Mapping[int, int], ends: Mapping[int, int]) -> CatchUp:
        """Reading each partition from ``starts`` (0 if absent) up to ``ends``."""
        return cls(topic, {p: end for p, end in ends.items() if end > starts.get(p, 0)})

    @property
    def done(self) -> bool:
        """Whether every record that existed when reading started has been read."""
        return not self._ends

    @property
    def behind(self) -> frozenset[int]:
        return frozenset(self._ends)

    def read(self, partition: int, offset: int) -> None:
        """The record at ``offset`` of ``partition`` was read."""
        self.passed(partition, offset + 1)

    def passed(self, partition: int, position: int) -> None:
        """The reader's next record of ``partition`` is at ``position`` or later."""
        end = self._ends.get(partition)
        if end is not None and position >= end:
            del self._ends[partition]


def start_reading(consumer: Consumer, topic: str, *, timeout: float,
                  from_committed: bool = False) -> CatchUp:
    """Assign every partition of ``topic`` to ``consumer`` from its beginning; what to catch up.

    With ``from_committed`` each partition starts where the consumer's group
    committed instead (where its ``auto.offset.reset`` says without a commit), and
    only what follows counts. ``TopicError`` when the topic does not exist or the
    broker does not answer within ``timeout`` seconds per request.
    """
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            detail = f" ({meta.error.str()})" if meta is not None and meta.error else ""
            raise TopicError(f"cannot read {topic}: it does not exist{detail}")
        partitions = sorted(meta.partitions)
        starts: dict[int, int] = {}
        ends: dict[int, int] = {}
        deadline = time.monotonic() + timeout
        for partition in partitions:
            starts[partition], ends[partition] = _watermarks(
                consumer, TopicPartition(topic, partition), deadline)
        if from_committed:
            committed = consumer.committed([TopicPartition(topic, p) for p in partitions],
                                           timeout=timeout)
            for tp in committed:
                if tp.offset >= 0:
                    starts[tp.partition] = max(starts[tp.partition], tp.offset)
        start = OFFSET_STORED if from_committed else OFFSET_BEGINNING
        consumer.assign([TopicPartition(topic, p, start) for p in partitions])
    except KafkaException as exc:
        raise TopicError(f"cannot read {topic}: {exc}") from exc
    return CatchUp.between(topic, starts, ends)


#: Answers of a partition whose leader is not ready yet: a topic just created, or a
#: leader moving. They pass within moments, so they are asked again until the deadline.
_LEADER_NOT_READY = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION,
                               KafkaError.LEADER_NOT_AVAILABLE,
                               KafkaError.UNKNOWN_TOPIC_OR_PART})


def _watermarks(consumer: Consumer, partition: TopicPartition,
                deadline: float) -> tuple[int, int]:
    """The partition's low and high offsets, asked again while its leader is not ready."""
    delay = Backoff(first=0.05, most=1.0)
    while True:
        remaining = deadline - time.monotonic()
        try:
            low, high = consumer.get_watermark_offsets(partition, timeout=max(remaining, 0.1))
            return int(low), int(high)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            code = error.code() if isinstance(error, KafkaError) else None
            if code not in _LEADER_NOT_READY or remaining <= 0:
                raise
        time.sleep(min(delay.next(), max(remaining, 0.0)))  # a thread's wait, not the loop's


def note_positions(consumer: Consumer, progress: CatchUp) -> None:
    """Tell ``progress`` where ``consumer`` stands in the partitions still behind.

    The last records before an end may be gone (compacted away, or transaction
    markers that are never delivered): the consumer's position moves past them
    all the same. A partition not fetched from yet has no position and stays behind.
    """
    if progress.done:
        return
    try:
        positions = consumer.position([TopicPartition(progress.topic, p)
                                       for p in sorted(progress.behind)])
    except KafkaException as exc:
        raise TopicError(f"cannot read {progress.topic}: {exc}") from exc
    for tp in positions:
        if tp.offset >= 0:
            progress.passed(tp.partition, tp.offset)


def read_to_end(consumer: Consumer, topic: str, *, timeout: float = 30.0,
                from_committed: bool = False, poll_seconds: float = 0.5) -> Iterator[Message]:
    """Every record of ``topic`` up to the end offsets it has when this starts (see
    :func:`start_reading`), each partition's in order; tombstones too (value None).

    ``TopicError`` when the topic does not exist, a record cannot be read, or
    nothing was read for ``timeout`` seconds while a partition is still behind.
    """
    progress = start_reading(consumer, topic, timeout=timeout, from_committed=from_committed)
    deadline = time.monotonic() + timeout
    while not progress.done:
        try:
            messages = consumer.consume(_BATCH, timeout=poll_seconds)
        except KafkaException as exc:
            raise TopicError(f"cannot read {topic}: {exc}") from exc
        if not messages:
            note_positions(consumer, progress)
            if not progress.done and time.monotonic() > deadline:
                raise TopicError(f"reading {topic} to its end made no progress for "
                                 f"{timeout:g} s; still behind in partitions "
                                 f"{sorted(progress.behind)}")
            continue
        for msg in messages:
            if msg.error() is not None:
                raise TopicError(f"cannot read {topic}: {msg.error()}")
            progress.read(msg.partition() or 0, msg.offset() or 0)
            yield msg
        # From here: what the caller did with the records is not the broker's delay.
        deadline = time.monotonic() + timeout


def read_topic(bootstrap: str, topic: str, *, timeout: float = 30.0) -> list[Message]:
    """Every record of ``topic`` up to its end now, read by a consumer of its own.

    A snapshot: the consumer's group is new and never commits, so the read moves
    no one's offsets. ``TopicError`` as :func:`read_to_end` says.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap,
                         "group.id": f"auditrelay-snapshot-{uuid.uuid4()}",
                         "enable.auto.commit": False, "log_level": 0})
    try:
        return list(read_to_end(consumer, topic, timeout=timeout))
    finally:
        consumer.close()
