"""One asyncio task per assigned partition over one aiokafka consumer.

The fetch loop only moves records into per-partition lanes; each lane handles
its records strictly in order in its own task, so a partition whose handler
waits (a hanging receiver, an open circuit, a retry not yet due) never delays
another. A lane whose queue is full, or whose handler holds it, is paused in
the consumer: its records wait in Kafka, and the poll loop keeps running, so
the consumer never exceeds its poll interval. Offsets are committed per
partition up to the last record the handler returned from and whose deferred
confirmations (``Lane.confirm_after``: records the handler handed to the
producer without waiting, such as status and attempt records) are all done,
so the lane goes on with its next record while the broker confirms the
previous one's records. At most ``max_unconfirmed`` handled records may wait
for their confirmations; beyond that the lane waits (its partition paused).

The default (eager) rebalance revokes every partition whenever the
subscription changes, for instance when a new destination topic appears.
Lanes therefore survive a revocation: they are kept until the assignment that
follows, resumed (the consumer seeks past what they already hold) if their
partition comes back, and stopped only if it went to another worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from auditrelay.kafka.backoff import Backoff
from auditrelay.kafka.clients import commit, fetch

__all__ = ["Handler", "Lane", "PartitionRunner"]

log = logging.getLogger(__name__)

#: ``handler(record, lane)``; returns once the record is fully handled.
Handler = Callable[[Any, "Lane"], Awaitable[None]]

_MAX_BACKOFF = 30.0
#: Records queued in a lane beyond which its partition is paused.
QUEUE_LIMIT: Final = 4
#: Handled records of a lane that may wait for their confirmations at once.
MAX_UNCONFIRMED: Final = 1000
#: How long a lane that stops, or whose partition is revoked, waits for confirmations.
SETTLE_SECONDS: Final = 5.0


class Lane:
    """An assigned partition: records fetched for it, and the task handling them in order."""

    def __init__(self, tp: TopicPartition, handler: Handler, *, name: str,
                 max_unconfirmed: int = MAX_UNCONFIRMED, queue_limit: int = QUEUE_LIMIT,
                 on_ready: Callable[[], None] | None = None) -> None:
        self.tp = tp
        self._handler = handler
        self._name = name
        self._queue_limit = queue_limit
        #: Called when the lane stops wanting its partition paused (queue drained below
        #: the limit, or no longer held), so it is resumed at once, not at the next poll.
        self._on_ready = on_ready
        self._queue: deque[Any] = deque()
        self._wakeup = asyncio.Event()
        self._held = 0
        self._max_unconfirmed = max_unconfirmed
        #: Confirmations the record being handled waits for (``confirm_after``).
        self._deferred: list[asyncio.Future[Any]] = []
        #: Handled records whose confirmations are not all done yet: (offset after, futures).
        self._unconfirmed: deque[tuple[int, list[asyncio.Future[Any]]]] = deque()
        self._settled = asyncio.Event()
        self._settled.set()
        #: Offset after the last record handled and confirmed (what to commit), and after
        #: the last fed.
        self.done: int | None = None
        self.fed: int | None = None
        self.committed: int | None = None
        self._task = asyncio.create_task(self._run(), name=f"{name}:{tp.topic}[{tp.partition}]")

    def __repr__(self) -> str:
        return f"Lane({self.tp.topic}[{self.tp.partition}], queued={len(self._queue)})"

    def feed(self, records: list[Any]) -> None:
        self._queue.extend(records)
        if records:
            self.fed = records[-1].offset + 1
            self._wakeup.set()

    def wants_pause(self, limit: int | None = None) -> bool:
        return self._held > 0 or len(self._queue) >= (
            self._queue_limit if limit is None else limit)

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """While inside, the partition is paused: the handler waits and wants no more records."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            if not self._held and len(self._queue) < self._queue_limit:
                self._ready()

    def _ready(self) -> None:
        if self._on_ready is None:
            return
        try:
            self._on_ready()
        except Exception:  # the next poll resumes it anyway
            log.exception("%s: resuming %s[%d] failed", self._name, self.tp.topic,
                          self.tp.partition)

    def confirm_after(self, *confirmations: asyncio.Future[Any]) -> None:
        """The record being handled counts as done only once these futures are done.

        A future that fails or is cancelled never confirms: the lane's committable
        offset stops before that record (whoever made the future must retry, not fail).
        """
        self._deferred.extend(confirmations)

    @property
    def unconfirmed(self) -> int:
        """Handled records still waiting for their confirmations."""
        return len(self._unconfirmed)

    async def settle(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until every handled record is confirmed; True if so."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), timeout)
        return self._settled.is_set()

    async def close(self, settle_seconds: float = 0.0) -> None:
        """Stop handling; then wait up to ``settle_seconds`` for pending confirmations."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if settle_seconds > 0 and not await self.settle(settle_seconds):
            log.warning("%s: %d handled record(s) of %s[%d] not confirmed; their offsets stay "
                        "uncommitted", self._name, len(self._unconfirmed), self.tp.topic,
                        self.tp.partition)

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if len(self._unconfirmed) >= self._max_unconfirmed:
                waiting = [f for f in self._unconfirmed[0][1] if not f.done()]
                with self.holding():
                    if waiting:
                        await asyncio.wait(waiting)
                    else:  # a confirmation failed: nothing more is committable
                        await self._settled.wait()
                continue
            record = self._queue[0]
            await self._handle(record)
            self._queue.popleft()
            self._handled(record.offset + 1)
            if len(self._queue) == self._queue_limit - 1 and not self._held:
                self._ready()

    def _handled(self, offset: int) -> None:
        deferred, self._deferred = self._deferred, []
        pending = [f for f in deferred if not f.done() or f.cancelled() or f.exception()]
        if not pending and not self._unconfirmed:
            self.done = offset
            return
        self._unconfirmed.append((offset, pending))
        self._settled.clear()
        for future in pending:
            future.add_done_callback(self._confirmed)
        self._advance()

    def _confirmed(self, _future: asyncio.Future[Any]) -> None:
        self._advance()

    def _advance(self) -> None:
        unconfirmed = self._unconfirmed
        while unconfirmed:
            offset, futures = unconfirmed[0]
            if not all(f.done() for f in futures):
                return
            if any(f.cancelled() or f.exception() is not None for f in futures):
                return  # never confirmed: nothing at or after it is committable
            unconfirmed.popleft()
            self.done = offset
        self._settled.set()

    async def _handle(self, record: Any) -> None:
        # A handler error is a bug or an outage; the record is tried again rather
        # than skipped, since skipping it would drop its events silently.
        backoff = Backoff(0.5, _MAX_BACKOFF)
        while True:
            try:
                await self._handler(record, self)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: handling %s[%d]@%d failed; trying again in %.1f s",
                              self._name, record.topic, record.partition, record.offset,
                              backoff.delay)
            await backoff.wait()


class PartitionRunner(ConsumerRebalanceListener):  # type: ignore[misc]
    """Runs lanes for the partitions ``consumer`` is assigned; the consumer's rebalance listener.

    Start and subscribe the consumer with ``listener=runner``
    (``auditrelay.kafka.clients.start_consumer``), then ``await runner.run()`` until ``stop``.
    """

    def __init__(self, consumer: AIOKafkaConsumer, handler: Handler, *, name: str,
                 queue_limit: int = QUEUE_LIMIT, commit_interval: float = 1.0,
                 poll_timeout_ms: int = 200) -> None:
        self._consumer = consumer
        self._handler = handler
        self._name = name
        self._queue_limit = queue_limit
        self._commit_interval = commit_interval
        self._poll_timeout_ms = poll_timeout_ms
        self._lanes: dict[TopicPartition, Lane] = {}
        self._revoked: dict[TopicPartition, Lane] = {}
        self._stopping = asyncio.Event()
        self._last_commit = 0.0

    @property
    def lanes(self) -> dict[TopicPartition, Lane]:
        return dict(self._lanes)

    # -- rebalance listener ------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        for tp in revoked:
            lane = self._lanes.pop(tp, None)
            if lane is not None:
                self._revoked[tp] = lane
        lanes = [lane for tp, lane in self._revoked.items() if tp in revoked]
        # What is handled but not yet confirmed is usually confirmed within milliseconds.
        await asyncio.gather(*(lane.settle(SETTLE_SECONDS) for lane in lanes))
        await self._commit(lanes)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            lane = self._revoked.pop(tp, None)
            if lane is not None and lane.fed is not None:
                # Its records are in the lane already; fetch what follows them.
                self._consumer.seek(tp, lane.fed)
            self._lanes[tp] = lane or self._lane(tp)
        gone, self._revoked = self._revoked, {}
        for lane in gone.values():
            await lane.close()

    # -- loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        backoff = Backoff(0.5, _MAX_BACKOFF)
        while not self._stopping.is_set():
            fetched = await fetch(self._consumer, backoff, self._name,
                                  timeout_ms=self._poll_timeout_ms)
            if fetched is None:
                continue
            for tp, records in fetched.items():
                lane = self._lanes.get(tp)
                if lane is None:  # fetched before the listener ran; should not happen
                    lane = self._lanes[tp] = self._lane(tp)
                lane.feed(records)
            self._reconcile_pauses()
            if time.monotonic() - self._last_commit >= self._commit_interval:
                await self._commit(list(self._lanes.values()))

    def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        """Stop every lane and commit what they handled; call after ``run`` returned."""
        lanes = [*self._lanes.values(), *self._revoked.values()]
        await asyncio.gather(*(lane.close(SETTLE_SECONDS) for lane in lanes))
        await self._commit(list(self._lanes.values()))
        self._lanes.clear()
        self._revoked.clear()

    def _lane(self, tp: TopicPartition) -> Lane:
        return Lane(tp, self._handler, name=self._name, queue_limit=self._queue_limit,
                    on_ready=self._reconcile_pauses)

    def _reconcile_pauses(self) -> None:
        assignment = self._consumer.assignment()
        paused = self._consumer.paused()
        want = {tp for tp, lane in self._lanes.items()
                if tp in assignment and lane.wants_pause()}
        if want - paused:
            self._consumer.pause(*(want - paused))
        resume = {tp for tp in paused if tp not in want and tp in assignment}
        if resume:
            self._consumer.resume(*resume)

    async def _commit(self, lanes: list[Lane]) -> None:
        self._last_commit = time.monotonic()
        offsets = {lane.tp: lane.done for lane in lanes
                   if lane.done is not None and lane.done != lane.committed}
        if not offsets:
            return
        if not await commit(self._consumer, offsets, self._name):
            return
        for lane in lanes:
            if lane.tp in offsets:
                lane.committed = offsets[lane.tp]
