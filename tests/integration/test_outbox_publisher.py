"""The outbox publisher against the real broker: steps, and what it deletes after.

A burst of destinations (topic, config record, event each) is published in one
step: every topic exists and the records arrive in their order. Commits that wake the
running publisher within its linger are read in one pass. An entry that
became visible after the publisher read its batch (on PostgreSQL a transaction
holding a lower id can commit late) is not deleted with the batch: it is
published by the next one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from sqlalchemy import select

from auditrelay.kafka.admin import delete_topics
from auditrelay.kafka.topic_reader import read_topic
from auditrelay.schemas.topics import TopicSpec
from auditrelay.store import outbox
from auditrelay.store.db import OutboxEntry
from auditrelay.store.engine import Store, make_engine, upgrade_database
from tests.support.polling import wait_until


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    upgrade_database(url)
    store = Store(make_engine(url))
    yield store
    store.dispose()


def publisher(store: Store, bootstrap: str, admin: AdminClient,
              cls: type[outbox.OutboxPublisher] = outbox.OutboxPublisher,
              ) -> outbox.OutboxPublisher:
    made = cls(store, {"bootstrap.servers": bootstrap, "enable.idempotence": True}, admin)
    assert made.acquire()
    return made


def test_a_burst_of_topics_and_records_is_published_in_order(
        store: Store, kafka_bootstrap: str, kafka_admin: AdminClient, topic: str,
        unique_name: str) -> None:
    names = [f"test.{unique_name}.dest{n}" for n in range(5)]
    with store.transaction() as session:
        for n, name in enumerate(names):
            outbox.enqueue_topic(session, outbox.CREATE_TOPIC, TopicSpec(name, 1, {}))
            outbox.enqueue_record(session, topic, b"k", f"config {n}".encode())
            outbox.enqueue_record(session, topic, b"k", f"event {n}".encode())
    sender = publisher(store, kafka_bootstrap, kafka_admin)
    try:
        assert sender.publish_pending() == 15
        existing = kafka_admin.list_topics(timeout=10).topics
        assert [name for name in names if name in existing] == names
        values = [m.value() for m in read_topic(kafka_bootstrap, topic)]
        assert values == [f"{kind} {n}".encode() for n in range(5)
                          for kind in ("config", "event")]
        with store.transaction() as session:
            assert session.scalars(select(OutboxEntry)).all() == []
    finally:
        sender.stop()
        delete_topics(kafka_admin, names)


def test_an_entry_committed_late_with_a_lower_id_is_kept_for_the_next_batch(
        store: Store, kafka_bootstrap: str, kafka_admin: AdminClient, topic: str) -> None:
    with store.transaction() as session:
        for n in (1, 2, 3):
            session.add(OutboxEntry(id=n, kind=outbox.RECORD, topic=topic, key=b"k",
                                    value=f"entry {n}".encode()))
    with store.transaction() as session:  # id 2: a transaction not yet committed
        late = session.get(OutboxEntry, 2)
        assert late is not None
        session.delete(late)

    class LateCommit(outbox.OutboxPublisher):
        def _perform(self, step: list[outbox._Pending]) -> None:
            # Id 2 commits after the batch was read, before it is deleted.
            with store.transaction() as session:
                session.add(OutboxEntry(id=2, kind=outbox.RECORD, topic=topic, key=b"k",
                                        value=b"entry 2"))
            super()._perform(step)

    sender = publisher(store, kafka_bootstrap, kafka_admin, LateCommit)
    try:
        assert sender.publish_pending() == 2
        with store.transaction() as session:
            assert session.scalars(select(OutboxEntry.id)).all() == [2]
    finally:
        sender.stop()
    follower = publisher(store, kafka_bootstrap, kafka_admin)
    try:
        assert follower.publish_pending() == 1
    finally:
        follower.stop()
    values = [m.value() for m in read_topic(kafka_bootstrap, topic)]
    assert values == [b"entry 1", b"entry 3", b"entry 2"]


def test_commits_within_the_linger_are_published_in_one_pass(
        store: Store, kafka_bootstrap: str, kafka_admin: AdminClient, topic: str) -> None:
    passes: list[int] = []
    lingering = threading.Event()

    class Counting(outbox.OutboxPublisher):
        def _perform_all(self, pending: list[outbox._Pending]) -> int:
            passes.append(len(pending))
            return super()._perform_all(pending)

        def _lingering(self) -> None:
            lingering.set()
            super()._lingering()

    # No idle poll: only the wake after the first commit makes it read.
    sender = Counting(store, {"bootstrap.servers": kafka_bootstrap,
                              "enable.idempotence": True}, kafka_admin,
                      idle_wait=60.0, linger=2.0)
    sender.start()
    try:
        wait_until(lambda: passes == [0], 30, "the publisher's first (empty) pass")
        with store.transaction() as session:
            outbox.enqueue_record(session, topic, b"k", b"entry 0")
        sender.wake()
        wait_until(lingering.is_set, 30, "the woken publisher lingering")
        for n in range(1, 5):
            with store.transaction() as session:
                outbox.enqueue_record(session, topic, b"k", f"entry {n}".encode())
        wait_until(lambda: len(passes) > 1, 30, "a pass after the wake")
        values = [m.value() for m in read_topic(kafka_bootstrap, topic)]
    finally:
        sender.stop()
    assert passes[1:] == [5]
    assert values == [f"entry {n}".encode() for n in range(5)]
