"""The Kafka outbox: side effects written in the same transaction as the change.

A destination change commits its row together with the outbox entries it
causes (the config record or tombstone on ``audit.destinations``, the
``pro.atmos.webhook.*`` self-audit event). Topic creations and deletions are
still performed: databases of the first release, which made a topic per
destination, may hold such entries (nothing enqueues them for destinations now). The
``OutboxPublisher`` thread performs them in id order and deletes each entry once
the broker confirmed it. While Kafka is down entries wait, and are published
when it returns: a change accepted by the API is never lost.

Every API and worker process runs a publisher; a lease row in the database lets
exactly one of them publish at a time, which keeps the entries' order.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient
from sqlalchemy import delete, insert, or_, select, update
from sqlalchemy.orm import Session

from auditrelay.kafka.admin import create_topics, delete_topics
from auditrelay.kafka.backoff import Backoff
from auditrelay.producer.librdkafka_log import librdkafka_logger
from auditrelay.schemas.builder import EncodedEvent
from auditrelay.schemas.errors import KafkaError, ProduceError
from auditrelay.schemas.topics import TopicSpec
from auditrelay.store.db import OutboxEntry, OutboxLease, utcnow
from auditrelay.store.engine import Store

if TYPE_CHECKING:
    from sqlalchemy import Table

log = logging.getLogger(__name__)

RECORD, CREATE_TOPIC, DELETE_TOPIC = "record", "create_topic", "delete_topic"
_BATCH = 200
_FLUSH_TIMEOUT = 30.0
#: How long a woken publisher waits for more commits before it reads: a burst of
#: changes (one per request) is then published in a few passes, not one pass each.
LINGER = 0.05
#: Longer than the slowest batch (a flush timing out), so a holder never loses
#: the lease in the middle of one.
LEASE = timedelta(seconds=60)


#: Entries are inserted at once with this Core statement, not added to the session: the
#: ORM's unit of work cost more CPU than the rest of a destination's creation together,
#: and the entries' ids then follow the order of the calls whatever else is pending.
_INSERT = insert(cast("Table", OutboxEntry.__table__))


def enqueue_record(session: Session, topic: str, key: bytes, value: bytes | None,
                   headers: Sequence[tuple[str, str]] = ()) -> None:
    _enqueue(session, RECORD, topic, key, value, [list(h) for h in headers] or None)


def enqueue_event(session: Session, topic: str, event: EncodedEvent) -> None:
    headers = [(k, v.decode() if isinstance(v, bytes) else v) for k, v in event.headers
               if v is not None]
    enqueue_record(session, topic, event.key, event.value, headers)


def enqueue_topic(session: Session, kind: str, spec: TopicSpec) -> None:
    """``kind`` is CREATE_TOPIC or DELETE_TOPIC; creation uses the spec's configs."""
    _enqueue(session, kind, spec.name, str(spec.partitions).encode(), None,
             [[k, v] for k, v in spec.config.items()] or None)


def _enqueue(session: Session, kind: str, topic: str, key: bytes | None, value: bytes | None,
             headers: list[list[str]] | None) -> None:
    session.execute(_INSERT, {"kind": kind, "topic": topic, "key": key, "value": value,
                              "headers": headers, "created_at": utcnow()})


@dataclass(frozen=True)
class _Pending:
    id: int
    kind: str
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[list[str]] | None


class OutboxPublisher:
    """Publishes outbox entries in order; one per API process, on its own thread."""

    def __init__(self, store: Store, producer_config: dict[str, Any], admin: AdminClient,
                 *, idle_wait: float = 1.0, max_backoff: float = 10.0,
                 linger: float = LINGER) -> None:
        self._store = store
        # librdkafka's own log lines go through logging, not straight to stderr.
        self._producer = Producer(producer_config, logger=librdkafka_logger("auditrelay.kafka"))
        self._admin = admin
        self._idle_wait = idle_wait
        self._max_backoff = max_backoff
        self._linger = linger
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-publisher", daemon=True)
        self.holder = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Publish now rather than at the next idle poll (called after a commit)."""
        self._wake.set()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._producer.flush(min(timeout, 5.0))
        self.release()

    def acquire(self) -> bool:
        """Take or renew the lease; True while this publisher holds it."""
        with self._store.transaction() as session:
            return self._claim(session)

    def _claim(self, session: Session) -> bool:
        now = utcnow()
        taken = session.execute(
            update(OutboxLease)
            .where(OutboxLease.id == 1,
                   or_(OutboxLease.holder == self.holder, OutboxLease.expires_at < now))
            .values(holder=self.holder, expires_at=now + LEASE))
        return bool(taken.rowcount)  # type: ignore[attr-defined]

    def release(self) -> None:
        with self._store.transaction() as session:
            session.execute(update(OutboxLease)
                            .where(OutboxLease.id == 1, OutboxLease.holder == self.holder)
                            .values(expires_at=utcnow()))

    def _run(self) -> None:
        backoff = Backoff(0.5, self._max_backoff)
        while not self._stop.is_set():
            try:
                published = self._publish_held()
                if published is None:  # another process holds the lease
                    self._stop.wait(self._idle_wait)
                    continue
                backoff.reset()
            except KafkaError as exc:
                log.warning("outbox: Kafka unavailable, retrying in %.1f s: %s", backoff.delay,
                            exc)
                self._stop.wait(backoff.next())
                continue
            except Exception:  # keep publishing whatever one entry did
                log.exception("outbox: unexpected error; retrying")
                self._stop.wait(self._max_backoff)
                continue
            if published < _BATCH and self._wake.wait(self._idle_wait):
                self._lingering()
                self._wake.clear()

    def _lingering(self) -> None:
        self._stop.wait(self._linger)

    def _publish_held(self) -> int | None:
        """Renew the lease and read a batch in one transaction, then :meth:`publish_pending`'s
        work; None (and nothing done) while another publisher holds the lease."""
        with self._store.transaction() as session:
            if not self._claim(session):
                return None
            pending = _read(session)
        return self._perform_all(pending)

    def publish_pending(self) -> int:
        """Perform up to one batch of entries in order; returns how many were done."""
        with self._store.transaction() as session:
            pending = _read(session)
        return self._perform_all(pending)

    def _perform_all(self, pending: list[_Pending]) -> int:
        done: list[int] = []
        try:
            for step in steps(pending):
                self._perform(step)
                done.extend(entry.id for entry in step)
        finally:
            if done:
                # By id, not "up to the last id": on PostgreSQL a transaction that took a
                # lower id may commit after the SELECT above; its entries are still to do.
                with self._store.transaction() as session:
                    session.execute(delete(OutboxEntry).where(OutboxEntry.id.in_(done)))
        return len(pending)

    def _perform(self, step: list[_Pending]) -> None:
        """One step of :func:`steps`: its deletions, or its creations then its records."""
        deletions = [e.topic for e in step if e.kind == DELETE_TOPIC]
        if deletions:
            delete_topics(self._admin, deletions)
            return
        create_topics(self._admin, [_spec(e) for e in step if e.kind == CREATE_TOPIC])
        records = [e for e in step if e.kind == RECORD]
        if records:
            self._produce(records)

    def _produce(self, records: list[_Pending]) -> None:
        failures: list[str] = []

        def on_delivery(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        try:
            for entry in records:
                self._producer.produce(entry.topic, key=entry.key, value=entry.value,
                                       headers=_pairs(entry.headers),
                                       on_delivery=on_delivery)
            remaining = self._producer.flush(_FLUSH_TIMEOUT)
        except (KafkaException, BufferError) as exc:
            raise ProduceError(f"outbox produce failed: {exc}") from exc
        if failures or remaining:
            raise ProduceError(f"outbox: {len(failures) or remaining} record(s) not confirmed: "
                               f"{failures[0] if failures else 'flush timed out'}")


_PENDING = (select(OutboxEntry.id, OutboxEntry.kind, OutboxEntry.topic, OutboxEntry.key,
                   OutboxEntry.value, OutboxEntry.headers)
            .order_by(OutboxEntry.id).limit(_BATCH))


def _read(session: Session) -> list[_Pending]:
    """The first batch of entries, in id order (plain rows: no ORM objects to build)."""
    return [_Pending(*row) for row in session.execute(_PENDING)]


def steps(pending: Sequence[_Pending]) -> list[list[_Pending]]:
    """The entries cut into steps, each performed with one call per kind, in order.

    A step is either consecutive topic deletions (one admin call), or a stretch without
    deletions whose topic creations are made first (one admin call) and whose records
    are then produced together (one flush, in their order). Making a topic before records
    that precede it in the outbox changes nothing anyone sees (a config record still
    follows its topic) and a thousand creations cost a few calls instead of a thousand
    round trips; a creation never moves across a deletion, which may be of its topic.
    """
    out: list[list[_Pending]] = []
    for entry in pending:
        deleting = entry.kind == DELETE_TOPIC
        if out and (out[-1][0].kind == DELETE_TOPIC) == deleting:
            out[-1].append(entry)
        else:
            out.append([entry])
    return out


def _spec(entry: _Pending) -> TopicSpec:
    """The topic an ``enqueue_topic`` entry creates (partitions in its key, configs in its
    headers)."""
    config = {k: str(v) for k, v in _pairs(entry.headers)}
    return TopicSpec(entry.topic, int((entry.key or b"1").decode()), config)


def _pairs(stored: list[list[str]] | None) -> list[tuple[str, str | bytes | None]]:
    return [(k, v) for k, v in stored or []]
