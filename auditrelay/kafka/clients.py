"""aiokafka clients of the delivery worker; aiokafka errors become ``KafkaError`` here.

``RecordSink`` produces with ``acks=all`` and idempotence. ``send`` returns
only once the broker confirmed the record: a batch moved to a retry tier or the
dead-letter topic is confirmed before the offset that held it is committed.
``enqueue`` only hands the record to the producer and returns the future of its
confirmation, so a caller can go on while the broker confirms (the status and
attempt records, ``auditrelay.tables.status.StatusPublisher``).

An idempotent aiokafka producer is finished after the broker refuses its sequence
(``OutOfOrderSequenceNumber``, which a broker outage longer than the request timeout
can cause: batches expired on our side, later ones arrive with a gap): its sender
task ends and every later send fails the same way. ``RecordSink`` then starts a new
producer (a new producer id, sequences from zero) in its place; the records that
failed are the callers' to send again, as after any failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import (
    InvalidProducerEpoch,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.partitioner import DefaultPartitioner, murmur2

from auditrelay.kafka.backoff import Backoff
from auditrelay.schemas.errors import BrokerUnavailableError, ProduceError

__all__ = ["KeyHashPartitioner", "RebalanceSummary", "RecordSink", "commit", "consumer", "fetch",
           "heartbeat_seconds", "rebalance_line", "start_consumer",
           "started_through_cancellation"]

log = logging.getLogger(__name__)

#: How long a cancelled start may still run before it is cancelled after all.
START_GRACE_SECONDS = 5.0

HeaderPairs = Sequence[tuple[str, bytes]]

#: Errors after which an idempotent aiokafka producer sends nothing more.
FATAL_TO_PRODUCER: tuple[type[Exception], ...] = (
    OutOfOrderSequenceNumber, ProducerFenced, UnknownProducerId, InvalidProducerEpoch)
#: How long the stop of a finished producer may take (it has nothing left to deliver).
_STOP_BROKEN_SECONDS = 5.0


class KeyHashPartitioner:
    """aiokafka's default partitioner (the Java client's murmur2 of the key), with each
    key's hash remembered: aiokafka computes murmur2 in Python, about 4 µs a record, and
    the worker's keys (destination and workspace ids) repeat. Same partitions, always."""

    def __init__(self, limit: int = 65_536) -> None:
        self._hashes: dict[bytes, int] = {}
        self._limit = limit

    def __call__(self, key: bytes | None, all_partitions: Sequence[int],
                 available: Sequence[int]) -> int:
        if key is None:
            return int(DefaultPartitioner()(key, all_partitions, available))
        hashes = self._hashes
        found = hashes.get(key)
        if found is None:
            if len(hashes) >= self._limit:
                hashes.clear()
            found = hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[found % len(all_partitions)]


class RecordSink:
    """One idempotent producer per worker; ``start`` before use, ``stop`` after."""

    def __init__(self, bootstrap: str, *, client_id: str = "auditrelay-worker",
                 request_timeout_ms: int = 30_000,
                 new_producer: Callable[[], AIOKafkaProducer] | None = None) -> None:
        def fresh() -> AIOKafkaProducer:
            return AIOKafkaProducer(
                bootstrap_servers=bootstrap, client_id=client_id, acks="all",
                enable_idempotence=True, request_timeout_ms=request_timeout_ms, linger_ms=0,
                partitioner=KeyHashPartitioner())

        self._new_producer = new_producer or fresh
        self._producer = self._new_producer()
        self._renewal: asyncio.Task[None] | None = None
        self.renewals = 0

    async def start(self) -> None:
        try:
            await started_through_cancellation(self._producer.start())
        except AIOKafkaError as exc:
            raise BrokerUnavailableError(f"producer could not connect: {exc}") from exc

    async def stop(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            await asyncio.gather(self._renewal, return_exceptions=True)
        try:
            await self._producer.stop()
        except AIOKafkaError as exc:
            log.warning("producer did not stop cleanly: %s", exc)

    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   headers: HeaderPairs = ()) -> None:
        """Produce one record and wait for the broker's confirmation."""
        producer = self._producer
        try:
            await producer.send_and_wait(topic, value=value, key=key, headers=list(headers))
        except AIOKafkaError as exc:
            await self._after_failure(producer, exc)
            raise ProduceError(f"record to {topic} not confirmed: {exc}") from exc

    async def send_to(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
                      headers: HeaderPairs = ()) -> int:
        """Produce one record to ``partition`` and wait for the broker's confirmation;
        returns its offset."""
        producer = self._producer
        try:
            metadata = await producer.send_and_wait(
                topic, value=value, key=key, partition=partition, headers=list(headers))
        except AIOKafkaError as exc:
            await self._after_failure(producer, exc)
            raise ProduceError(f"record to {topic}[{partition}] not confirmed: {exc}") from exc
        offset: int = metadata.offset
        return offset

    async def enqueue(self, topic: str, key: bytes | None, value: bytes | None,
                      headers: HeaderPairs = ()) -> asyncio.Future[Any]:
        """Hand one record to the producer; the future is done once the broker answered.

        The future's exception (an aiokafka error) says the record is not confirmed.
        Raises ``ProduceError`` when the record cannot even be queued.
        """
        producer = self._producer
        try:
            future: asyncio.Future[Any] = await producer.send(
                topic, value=value, key=key, headers=list(headers) if headers else None)
        except AIOKafkaError as exc:
            await self._after_failure(producer, exc)
            raise ProduceError(f"record to {topic} not queued: {exc}") from exc
        future.add_done_callback(lambda done: self._watch(producer, done))
        return future

    def _watch(self, producer: AIOKafkaProducer, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and isinstance(future.exception(), FATAL_TO_PRODUCER):
            self._renew_soon(producer)

    async def _after_failure(self, producer: AIOKafkaProducer, exc: Exception) -> None:
        if isinstance(exc, FATAL_TO_PRODUCER):
            self._renew_soon(producer)
            renewal = self._renewal
            if renewal is not None:
                await asyncio.gather(asyncio.shield(renewal), return_exceptions=True)

    def _renew_soon(self, broken: AIOKafkaProducer) -> None:
        if broken is self._producer and self._renewal is None:
            self._renewal = asyncio.ensure_future(self._renew(broken))

    async def _renew(self, broken: AIOKafkaProducer) -> None:
        """Put a started new producer in the place of ``broken``; on failure (the broker
        still away) keep ``broken``, so that the next fatal error tries again."""
        try:
            fresh = self._new_producer()
            try:
                await fresh.start()
            except AIOKafkaError as exc:
                log.warning("a new producer could not start (%s); the next failure tries again",
                            exc)
                with contextlib.suppress(Exception):
                    await fresh.stop()
                return
            self._producer = fresh
            self.renewals += 1
            log.warning("the broker refused the producer's sequence; a new producer took over "
                        "(records not confirmed are sent again)")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(broken.stop(), _STOP_BROKEN_SECONDS)
        finally:
            self._renewal = None


def consumer(bootstrap: str, *, group_id: str | None, client_id: str,
             session_timeout: float | None = None, **options: Any) -> AIOKafkaConsumer:
    """A consumer that never commits on its own and starts new partitions at the beginning.

    ``earliest``: a destination topic picked up after its first batches were
    written must still deliver them. ``session_timeout`` (seconds, for a group
    member): how long the group waits for a silent member before its partitions
    move; it heartbeats every :func:`heartbeat_seconds` of that.
    """
    if session_timeout is not None:
        options.update(session_timeout_ms=round(session_timeout * 1000),
                       heartbeat_interval_ms=round(heartbeat_seconds(session_timeout) * 1000))
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group_id, client_id=client_id,
        enable_auto_commit=False, auto_offset_reset="earliest", **options)


async def start_consumer(consumer: AIOKafkaConsumer, *, topics: Sequence[str] = (),
                         pattern: str | None = None, listener: Any = None) -> None:
    """Start ``consumer``, then subscribe it to ``topics`` or ``pattern`` (if given).

    Subscribing after the start keeps the start to the bootstrap, which
    :func:`started_through_cancellation` can let finish: a start with a
    subscription also waits for the group's assignment, which may take seconds.
    """
    try:
        await started_through_cancellation(consumer.start())
    except AIOKafkaError as exc:
        raise BrokerUnavailableError(f"consumer could not connect: {exc}") from exc
    group = getattr(consumer, "_group_id", None)  # aiokafka keeps it private
    if group is not None:
        listener = RebalanceSummary(group, listener)
    if pattern is not None:
        consumer.subscribe(pattern=pattern, listener=listener)
    elif topics:
        consumer.subscribe(topics=list(topics), listener=listener)


def rebalance_line(group: str, before: Collection[TopicPartition],
                   after: Collection[TopicPartition]) -> str:
    """The one line a group member logs per rebalance: counts, never the partitions."""
    topics = len({tp.topic for tp in after})
    added, gone = len(set(after) - set(before)), len(set(before) - set(after))
    return (f"group {group}: assigned {len(after)} partitions of {topics} topics "
            f"(was {len(before)}; {added} new, {gone} gone)")


class RebalanceSummary(ConsumerRebalanceListener):  # type: ignore[misc]
    """Logs :func:`rebalance_line` at each assignment, then calls ``inner``'s callbacks.

    aiokafka's own INFO lines of a rebalance list every partition (a line of
    tens of kilobytes, or a table of one row per topic once Faust formats it:
    thousands of lines at every rebalance with thousands of destinations); the
    worker demotes those to DEBUG (``auditrelay.observability.logs``) and says
    this instead.
    """

    def __init__(self, group: str, inner: Any = None) -> None:
        self._group = group
        self._inner = inner
        self._assigned: frozenset[TopicPartition] = frozenset()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if self._inner is not None:
            await _maybe_await(self._inner.on_partitions_revoked(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info(rebalance_line(self._group, self._assigned, assigned))
        self._assigned = frozenset(assigned)
        if self._inner is not None:
            await _maybe_await(self._inner.on_partitions_assigned(assigned))


async def _maybe_await(result: Any) -> None:
    # aiokafka accepts plain and coroutine callbacks alike; so does the wrapper.
    if inspect.isawaitable(result):
        await result


async def started_through_cancellation(start: Awaitable[None]) -> None:
    """Await an aiokafka client's ``start()``; a cancellation lets it finish first.

    A start cancelled in the middle of its bootstrap request leaks the connection
    it was using (aio-libs/aiokafka#715): ``stop()`` does not know it, and its socket
    stays open until the garbage collector finds it. So a cancellation waits up to
    :data:`START_GRACE_SECONDS` for the start to end (then the caller's ``stop()``
    closes everything), and is raised after that.
    """
    task = asyncio.ensure_future(start)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        done, _ = await asyncio.wait([task], timeout=START_GRACE_SECONDS)
        if done and not task.cancelled():
            task.exception()  # retrieved: the caller's stop() is what matters now
        else:
            task.cancel()
        raise


async def fetch(kafka: AIOKafkaConsumer, backoff: Backoff, name: str,
                **getmany: Any) -> dict[Any, list[Any]] | None:
    """``kafka.getmany(**getmany)``; after a Kafka error, logged, the backoff's wait and
    None (the caller's loop polls again)."""
    try:
        fetched: dict[Any, list[Any]] = await kafka.getmany(**getmany)
    except AIOKafkaError as exc:
        log.warning("%s: fetching failed, again in %.1f s: %s", name, backoff.delay, exc)
        await backoff.wait()
        return None
    backoff.reset()
    return fetched


async def commit(kafka: AIOKafkaConsumer, offsets: dict[Any, int], name: str) -> bool:
    """Commit ``offsets``; a Kafka error is logged and False returned (the caller keeps
    them for its next commit, or the partitions' next owner reads those records again)."""
    try:
        await kafka.commit(offsets)
    except AIOKafkaError as exc:
        log.warning("%s: commit failed: %s", name, exc)
        return False
    return True


def heartbeat_seconds(session_timeout: float) -> float:
    """How often a group member heartbeats: a third of the session timeout, at most 3 s."""
    return min(3.0, session_timeout / 3)
