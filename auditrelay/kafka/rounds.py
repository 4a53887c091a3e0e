"""Reading ``audit.events`` in rounds for a Faust agent: many records per step.

A Faust stream hands its agent one record at a time, with several event-loop
turns, a task switch and offset bookkeeping per record; that caps one stream
agent near 11 000 records/s on our 2-core machine whatever the agent does
(docs/performance.md#router). The archive therefore reads the input topic
through a :class:`RoundReader` (the router, whose batches must not wait for a
round, through :mod:`auditrelay.kafka.streaming`): one aiokafka consumer in a group of
the stage's own, whose ``getmany`` loop gathers a round (up to ``max_records``
records, or whatever came until ``window`` seconds after the round's oldest
record was produced), hands it to the stage's Faust agent over an in-memory channel as a
:class:`Round`, and commits the round's offsets only once the agent resolved it.
Faust's cost is then paid per round, not per record.

Guarantees:

- At least once: a round's offsets are committed only after the agent settled
  it (the archive: the rows committed). A round the agent could not settle
  (cancelled at shutdown) is not committed, and the next owner of its
  partitions reads it again.
- One round at a time per reader, in partition order, so per-partition (hence
  per-workspace, hence per-destination) order is kept.
- Rebalances: the revocation callback waits for the round in hand, commits it,
  and invalidates what was gathered but not handed over yet; the assignment
  that follows restarts every partition at its committed offset, and the
  reader seeks the partitions it keeps back to the first record it dropped
  (records fetched after the assignment moved their positions on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from auditrelay.kafka.backoff import Backoff
from auditrelay.kafka.clients import commit, consumer, fetch, start_consumer
from auditrelay.schemas.settings import Settings

__all__ = ["FETCH_MAX_WAIT_MS", "FETCH_MIN_BYTES", "Round", "RoundReader", "hand_over_to",
           "input_consumer", "next_offsets", "read_rounds", "rewind", "round_deadline", "settle"]

log = logging.getLogger(__name__)

_MAX_BACKOFF = 30.0
FETCH_MIN_BYTES = 256 * 1024
#: How long the broker may hold a fetch for ``FETCH_MIN_BYTES`` (the archive's wait).
FETCH_MAX_WAIT_MS = 50
#: One workspace is one partition: let a fetch bring several rounds' worth of it.
_PARTITION_FETCH_BYTES = 4 * 1024 * 1024

#: ``hand_over(records)``: returns once the round is settled; raises if it was not.
HandOver = Callable[[list[Any]], Awaitable[None]]


@dataclass(eq=False)
class Round:
    """Records for an agent, and the future the agent resolves once they are handled."""

    records: list[Any]
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


async def settle(batch: Round, work: Awaitable[object]) -> None:
    """Run ``work`` for ``batch`` and resolve the round with its outcome.

    Used by the agent body; an error is also raised on, so that the agent's
    supervisor sees it, but the reader learns first that the round failed.
    """
    try:
        await work
    except BaseException as exc:
        if not batch.done.done():
            if isinstance(exc, asyncio.CancelledError):
                batch.done.cancel()
            else:
                batch.done.set_exception(exc)
        raise
    if not batch.done.done():
        batch.done.set_result(None)


def round_deadline(now: float, oldest_ms: int | None, window: float) -> float:
    """When a round closes, in epoch seconds, given its oldest record's Kafka timestamp.

    ``window`` after that record was produced, so that no event waits in a round
    longer than the window even when it reached the reader late; but never later
    than ``window`` from ``now`` (a producer clock ahead of ours) nor before ``now``.
    """
    latest = now + window
    if not oldest_ms or oldest_ms <= 0:
        return latest
    return min(latest, max(now, oldest_ms / 1000 + window))


def next_offsets(records: list[Any]) -> dict[TopicPartition, int]:
    """The offset to commit per partition after ``records`` (in fetch order)."""
    return {TopicPartition(r.topic, r.partition): r.offset + 1 for r in records}


class RoundReader(ConsumerRebalanceListener):  # type: ignore[misc]
    """Gathers rounds from ``consumer`` and hands them over; its rebalance listener.

    Start and subscribe the consumer with ``listener=reader``
    (``auditrelay.kafka.clients.start_consumer``), then ``await reader.run(hand_over)``
    until :meth:`stop` or cancellation.
    """

    def __init__(self, consumer: AIOKafkaConsumer, *, name: str, max_records: int,
                 window: float, poll_timeout_ms: int = 500,
                 commit_interval: float = 1.0) -> None:
        self._consumer = consumer
        self._name = name
        self._max_records = max_records
        self._window = window
        self._poll_timeout_ms = poll_timeout_ms
        # Settled rounds are committed at most this often (and always at a
        # rebalance and at stop): a commit is a broker round trip, and the next
        # round waits for it. A crash re-reads at most this much.
        self._commit_interval = commit_interval
        self._last_commit = 0.0
        self._lock = asyncio.Lock()
        self._generation = 0
        self._uncommitted: dict[TopicPartition, int] = {}
        self._stopping = asyncio.Event()
        self._fetch_backoff = Backoff(0.5, _MAX_BACKOFF)
        #: Rounds handed over and settled, for tests and logs.
        self.rounds = 0

    # -- rebalance listener ------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._generation += 1
        async with self._lock:  # the round in hand is settled and committed first
            await self._commit()
            for tp in revoked:  # not ours to commit any more; the next owner re-reads
                self._uncommitted.pop(tp, None)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Nothing to do: a new assignment starts each partition at its committed offset."""

    # -- loop --------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, hand_over: HandOver) -> None:
        while not self._stopping.is_set():
            generation = self._generation
            records = await self._gather()
            if not records:
                if self._uncommitted:  # idle: commit what the interval held back
                    async with self._lock:
                        await self._commit()
                continue
            async with self._lock:
                if generation != self._generation:
                    # Partitions moved while gathering. Those still ours restarted at
                    # their committed offsets, but what was fetched since moved their
                    # positions on: back to the first record dropped, so that all of
                    # these come again (the others' next owner reads them).
                    self._rewind(records)
                    continue
                try:
                    await hand_over(records)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("%s: a round of %d records was not settled; reading it again",
                                  self._name, len(records))
                    self._rewind(records)
                    await asyncio.sleep(1.0)
                    continue
                self.rounds += 1
                self._uncommitted.update(next_offsets(records))
                if time.monotonic() - self._last_commit >= self._commit_interval:
                    await self._commit()

    async def _gather(self) -> list[Any]:
        records: list[Any] = []
        deadline: float | None = None
        while len(records) < self._max_records and not self._stopping.is_set():
            if deadline is None:
                timeout_ms = self._poll_timeout_ms
            else:
                timeout_ms = max(0, round((deadline - time.time()) * 1000))
            fetched = await fetch(self._consumer, self._fetch_backoff, self._name,
                                  timeout_ms=timeout_ms,
                                  max_records=self._max_records - len(records))
            if fetched is None:
                continue
            for part in fetched.values():
                records.extend(part)
            if not records:
                return records
            if deadline is None:
                oldest = min((part[0].timestamp for part in fetched.values() if part), default=None)
                deadline = round_deadline(time.time(), oldest, self._window)
            if time.time() >= deadline:
                break
        return records

    def _rewind(self, records: list[Any]) -> None:
        rewind(self._consumer, records)

    async def _commit(self) -> None:
        self._last_commit = time.monotonic()
        assigned = self._consumer.assignment()
        offsets = {tp: o for tp, o in self._uncommitted.items() if tp in assigned}
        self._uncommitted = {}
        if not offsets:
            return
        if not await commit(self._consumer, offsets, self._name):
            for tp, offset in offsets.items():
                self._uncommitted.setdefault(tp, offset)

    async def close(self) -> None:
        """Commit what is settled; call after ``run`` returned or was cancelled."""
        with contextlib.suppress(Exception):
            await self._commit()


def rewind(kafka: AIOKafkaConsumer, records: list[Any]) -> None:
    """Seek each assigned partition of ``records`` back to its first record there."""
    firsts: dict[TopicPartition, int] = {}
    for record in records:
        tp = TopicPartition(record.topic, record.partition)
        firsts[tp] = min(firsts.get(tp, record.offset), record.offset)
    assigned = kafka.assignment()
    for tp, offset in firsts.items():
        if tp in assigned:
            kafka.seek(tp, offset)


def hand_over_to(channel: Any, name: str, *, report_seconds: float = 60.0) -> HandOver:
    """Hand rounds to the agent iterating ``channel`` (a Faust in-memory channel).

    A put reaches only the streams subscribed at that moment, so the first round
    waits until the agent's stream subscribed. A round the agent takes long to
    settle (its broker or database is down) is reported every ``report_seconds``.
    """

    async def hand_over(records: list[Any]) -> None:
        while not channel.subscriber_count:
            await asyncio.sleep(0.01)
        batch = Round(records)
        await channel.put(batch)
        waited = 0.0
        while True:
            done, _ = await asyncio.wait([batch.done], timeout=report_seconds)
            if done:
                batch.done.result()  # raises what the agent raised
                return
            waited += report_seconds
            log.warning("%s: a round of %d records has waited %.0f s for its agent",
                        name, len(records), waited)

    return hand_over


def input_consumer(settings: Settings, group_id: str, client_id: str, *,
                   fetch_min_bytes: int = FETCH_MIN_BYTES,
                   fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS) -> AIOKafkaConsumer:
    """A consumer of the input topic in the stage's group ``group_id`` (``TopicNames``).

    The broker answers a fetch once it has ``fetch_min_bytes`` or after
    ``fetch_max_wait_ms``. The archive's defaults: a few fetches per second at low
    rates instead of one per record or two (each costs the worker CPU), for at
    most 50 ms of waiting. The router, whose latency it is, sets its own
    (``auditrelay.agents.router``).
    """
    return consumer(settings.kafka_bootstrap, group_id=group_id, client_id=client_id,
                    session_timeout=settings.consumer_session_timeout_seconds,
                    fetch_min_bytes=fetch_min_bytes, fetch_max_wait_ms=fetch_max_wait_ms,
                    max_partition_fetch_bytes=_PARTITION_FETCH_BYTES)


async def read_rounds(kafka: AIOKafkaConsumer, topic: str, hand_over: HandOver, *,
                      name: str, max_records: int, window: float) -> None:
    """Subscribe ``kafka`` to ``topic`` and hand its rounds over until cancelled."""
    reader = RoundReader(kafka, name=name, max_records=max_records, window=window)
    try:
        await start_consumer(kafka, topics=[topic], listener=reader)
        await reader.run(hand_over)
    finally:
        await reader.close()
        await kafka.stop()
