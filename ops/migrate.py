"""``auditrelay topics migrate``: the first design's topic per destination, moved onto
``audit.deliveries``.

The first release gave each destination a topic, ``audit.dest.{id}``; batches now
share ``audit.deliveries``, keyed by destination id. Upgrading, once the old workers
are stopped and ``topics ensure`` made the new topics: for every legacy topic, the
records the delivery group has not committed (all of them without a commit) are
produced to ``audit.deliveries`` with the destination id as key, values and headers
untouched and in their order, by an idempotent producer that waits for every
replica; then the group's offset is committed at the end and the legacy topic is
deleted. A run interrupted before the deletion finds that commit and moves nothing
twice; a second run finds no legacy topic. Old workers still in the delivery group
would deliver the same batches from the legacy topics: the command refuses then.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from auditrelay.kafka.admin import admin_client, delete_topics
from auditrelay.kafka.topic_reader import read_to_end
from auditrelay.producer.config import ProducerConfig
from auditrelay.schemas.errors import BrokerUnavailableError, ProduceError, TopicError
from auditrelay.schemas.settings import Settings

__all__ = ["MigrateReport", "migrate_legacy_topics"]

_TIMEOUT = 30.0


@dataclass
class MigrateReport:
    #: (legacy topic, batches moved from it), in the order they were moved.
    moved: list[tuple[str, int]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(n for _, n in self.moved)

    def lines(self) -> list[str]:
        return [f"{topic}: moved {n}" for topic, n in self.moved]


def migrate_legacy_topics(settings: Settings, *,
                          echo: Callable[[str], None] = lambda _: None) -> MigrateReport:
    """Move every legacy destination topic's undelivered batches; ``echo`` hears of each
    topic once it is done. ``TopicError`` when the delivery group still has members or
    ``audit.deliveries`` does not exist; nothing is moved then."""
    names = settings.topics
    admin = admin_client(settings.kafka_bootstrap)
    topics = _topic_names(admin)
    legacy = sorted(t for t in topics if t.startswith(names.legacy_destination_prefix)
                    and t != names.legacy_destination_prefix)
    report = MigrateReport()
    if not legacy:
        return report
    if names.deliveries not in topics:
        raise TopicError(f"{names.deliveries} does not exist: run `auditrelay topics ensure` "
                         "before `auditrelay topics migrate`")
    members = _members(admin, names.delivery_group)
    if members:
        raise TopicError(
            f"the delivery group {names.delivery_group} still has {members} active member(s): "
            "stop the old workers first (they would deliver the legacy topics' batches too)")
    producer = Producer({**ProducerConfig.from_settings(
        settings, client_id="auditrelay-migrate").kafka_config(),
        # The router's (aiokafka's) partitioner, Java's: a destination's moved batches
        # must be in the partition its next batches go to.
        "partitioner": "murmur2_random"})
    for topic in legacy:
        destination_id = topic.removeprefix(names.legacy_destination_prefix)
        moved = _move(settings, producer, topic, destination_id)
        delete_topics(admin, [topic])
        report.moved.append((topic, moved))
        echo(report.lines()[-1])
    return report


def _topic_names(admin: AdminClient) -> set[str]:
    try:
        return set(admin.list_topics(timeout=_TIMEOUT).topics)
    except KafkaException as exc:
        raise BrokerUnavailableError(f"cannot list topics: {exc}") from exc


def _members(admin: AdminClient, group: str) -> int:
    """How many members ``group`` has now (0 for a group that does not exist)."""
    try:
        future = admin.describe_consumer_groups([group], request_timeout=_TIMEOUT)[group]
        return len(future.result().members)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if isinstance(error, KafkaError) and error.code() == KafkaError.GROUP_ID_NOT_FOUND:
            return 0
        raise BrokerUnavailableError(f"cannot describe consumer group {group}: {exc}") from exc


def _move(settings: Settings, producer: Producer, topic: str, destination_id: str) -> int:
    """Produce what the delivery group has not committed on ``topic`` to deliveries,
    then commit it for the group; the number of records moved."""
    names = settings.topics
    failures: list[str] = []

    def confirmed(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(err.str())

    # The delivery group's own consumer reads from its committed offsets (``earliest``
    # without a commit); it assigns partitions and never joins the group, which has no
    # members, so its commit afterwards is accepted as the group's.
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap,
                         "group.id": names.delivery_group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "log_level": 0})
    moved = 0
    try:
        for msg in read_to_end(consumer, topic, timeout=_TIMEOUT, from_committed=True):
            _, timestamp = msg.timestamp()
            while True:
                try:
                    producer.produce(names.deliveries, key=destination_id.encode(),
                                     value=msg.value(), headers=msg.headers() or [],
                                     timestamp=max(timestamp, 0), on_delivery=confirmed)
                    break
                except BufferError:
                    producer.poll(0.5)  # the local queue is full: let the broker confirm
            producer.poll(0)
            moved += 1
        if producer.flush(_TIMEOUT) != 0 or failures:
            raise ProduceError(f"moving {topic} to {names.deliveries}: not every record was "
                               f"confirmed ({'; '.join(failures[:3]) or 'timed out'}); "
                               "the legacy topic is kept, run the command again")
        if moved:
            consumer.commit(asynchronous=False)
    except KafkaException as exc:
        raise TopicError(f"cannot move {topic} to {names.deliveries}: {exc}") from exc
    finally:
        consumer.close()
    return moved
