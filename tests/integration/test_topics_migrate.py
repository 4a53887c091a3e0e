"""`topics migrate` against the real broker: a legacy topic per destination
(``{prefix}dest.{id}``) moved onto the keyed ``deliveries`` topic, then deleted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.partitioner import murmur2
from click.testing import CliRunner
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from auditrelay.kafka.admin import create_topics
from auditrelay.kafka.topic_reader import read_topic
from auditrelay.ops.cli import cli
from auditrelay.ops.migrate import migrate_legacy_topics
from auditrelay.ops.topics import ensure_topics
from auditrelay.schemas.errors import TopicError
from auditrelay.schemas.settings import Settings
from auditrelay.schemas.topics import TopicSpec
from tests.support.cleanup import topics_cleaned_up
from tests.support.polling import wait_until
from tests.support.settings import make_settings

DEST = "dst_legacy"


@pytest.fixture
def prefixed(kafka_bootstrap: str, kafka_admin: AdminClient, unique_name: str,
             tmp_path: Path) -> Iterator[Settings]:
    settings = make_settings(tmp_path, kafka_bootstrap, f"test.{unique_name}.",
                             topic_partitions=1, delivery_partitions=2)
    with topics_cleaned_up(kafka_admin, settings.topics):
        ensure_topics(settings)
        yield settings


def _legacy(settings: Settings, kafka_admin: AdminClient, records: int) -> str:
    """A legacy destination topic holding ``records`` batches, headers included."""
    topic = f"{settings.topics.legacy_destination_prefix}{DEST}"
    create_topics(kafka_admin, [TopicSpec(topic, 1, {})])
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for n in range(records):
        producer.produce(topic, key=DEST.encode(), value=f"batch-{n}".encode(),
                         headers=[("ar_batch_id", f"msg_{n}".encode()), ("ar_attempt", b"0")])
    assert producer.flush(10) == 0
    return topic


def _commit(settings: Settings, topic: str, offset: int) -> None:
    """The delivery group committed ``offset`` on the legacy topic (it delivered those before)."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap,
                         "group.id": settings.topics.delivery_group, "log_level": 0})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        consumer.close()


def _env(settings: Settings) -> dict[str, str]:
    return {"AUDITRELAY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "AUDITRELAY_TOPIC_PREFIX": settings.topic_prefix,
            "AUDITRELAY_VAR_DIR": str(settings.var_dir), "AUDITRELAY_DATABASE_URL":
            settings.database_url, "AUDITRELAY_DELIVERY_PARTITIONS": "2"}


def test_migrate_moves_what_the_group_did_not_commit_then_deletes_the_topic(
        prefixed: Settings, kafka_admin: AdminClient) -> None:
    names = prefixed.topics
    topic = _legacy(prefixed, kafka_admin, 3)
    _commit(prefixed, topic, 1)

    result = CliRunner().invoke(cli, ["topics", "migrate"], env=_env(prefixed),
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"{topic}: moved 2", "total: moved 2 batch(es) from 1 topic(s)"]

    moved = read_topic(prefixed.kafka_bootstrap, names.deliveries)
    assert [(m.key(), m.value()) for m in moved] == [
        (DEST.encode(), b"batch-1"), (DEST.encode(), b"batch-2")]
    assert [m.headers() for m in moved] == [
        [("ar_batch_id", f"msg_{n}".encode()), ("ar_attempt", b"0")] for n in (1, 2)]
    # One key, one partition, the router's (Java's murmur2): with its later batches.
    assert {m.partition() for m in moved} == {
        (murmur2(DEST.encode()) & 0x7FFFFFFF) % prefixed.delivery_partitions}
    wait_until(lambda: topic not in kafka_admin.list_topics(timeout=10).topics, 30,
               f"{topic} was not deleted", interval=0.2)

    again = CliRunner().invoke(cli, ["topics", "migrate"], env=_env(prefixed),
                               catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert again.output.splitlines() == ["total: moved 0 batch(es) from 0 topic(s)"]
    assert len(read_topic(prefixed.kafka_bootstrap, names.deliveries)) == 2


def test_migrate_refuses_while_the_delivery_group_has_members(
        prefixed: Settings, kafka_admin: AdminClient) -> None:
    topic = _legacy(prefixed, kafka_admin, 1)
    old_worker = Consumer({"bootstrap.servers": prefixed.kafka_bootstrap,
                           "group.id": prefixed.topics.delivery_group,
                           "auto.offset.reset": "earliest", "enable.auto.commit": False,
                           "log_level": 0})
    try:
        old_worker.subscribe([topic])
        wait_until(lambda: old_worker.poll(0.2) is not None and bool(old_worker.assignment()),
                   30, "the old worker never joined the delivery group", interval=0)
        with pytest.raises(TopicError, match="still has 1 active member"):
            migrate_legacy_topics(prefixed)
    finally:
        old_worker.close()
    assert topic in kafka_admin.list_topics(timeout=10).topics
    assert read_topic(prefixed.kafka_bootstrap, prefixed.topics.deliveries) == []
