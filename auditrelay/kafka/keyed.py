"""Key-level parallelism over one aiokafka consumer: a lane per key, commits that never
pass an unsettled record.

The delivery topics are keyed by destination id, many destinations to a
partition. The fetch loop sorts each fetched record into the lane of its key
(``lane_of(record)``: by default its topic, partition and key); each lane
handles its records strictly in order in a task of its own, and exists only
while it has records, so a destination that hangs, waits for its circuit or
for a retry's due time holds back its own records and nobody else's. This is
how Confluent's Parallel Consumer orders by key.

Offsets: a record is settled once its handler returned and the confirmations it
deferred (``Lane.confirm_after``: status and attempt records on their way to the
broker) are all done. Per partition, the committed offset is the lowest
unsettled record's: a crash re-reads at most what was in flight, and since a
key's records are handled in order, whatever is re-read of a key comes after
what its lane finished.

Memory: each partition has at most ``max_records`` records and ``max_bytes`` of
values in flight (fed and not yet settled); beyond that it is paused in the
consumer, its records wait in Kafka, and the poll loop keeps running, so the
consumer never exceeds its poll interval. Records settled behind an unsettled one
(a slow receiver's batch) hold no value any more and do not count: they only keep
their offset, until ``BEHIND_FACTOR`` times ``max_records`` of them pause the
partition too. (Counting them paused a partition of a thousand destinations behind
one that took 14 s per batch, issue #19.)

Diverting (``Diverter``): a record its diverter ``wants`` at feed time, for
instance one of a destination whose circuit is open or whose lane is backed
up, never enters the lane's queue, and one that ``stops`` when its turn comes
leaves it, with the movable records behind it. The lane's divert chain hands
such records to ``move`` one at a time, in order, and a record is settled once
moved (``agents.delivery`` parks them on ``audit.parked``, same partition): so
no record waits long in a shared partition, and the commit point moves on. Several
topics may share lanes (``lane_of`` by partition and key): the delivery stage's
``audit.deliveries`` and ``audit.parked`` are co-partitioned, so a destination's
parked records come back into the same lane, after the ones it held.

Rebalances (eager: every partition is revoked first): a revocation waits
briefly for confirmations and commits what is settled; lanes are kept until
the assignment that follows. A partition that came back goes on where it was
(the consumer seeks past what was fed); a lane holding records of a partition
that went elsewhere is stopped, its record in flight cancelled and left
uncommitted, so the next owner handles it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterator
from typing import Any, Final, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from auditrelay.kafka.backoff import Backoff
from auditrelay.kafka.clients import commit, fetch

__all__ = ["Diverter", "Handler", "KeyedRunner", "Lane", "Prepare", "lane_by_partition_and_key",
           "lane_by_topic_partition_and_key"]

log = logging.getLogger(__name__)

#: ``handler(record, lane)``: returns once the record is handled (its deferred
#: confirmations may still be pending).
Handler = Callable[[Any, "Lane"], Awaitable[None]]
#: ``prepare(assigned)``: awaited in the assignment callback, before any record of the
#: new assignment is handled (the delivery stage learns its parked destinations there).
Prepare = Callable[[set[TopicPartition]], Awaitable[None]]

_MAX_BACKOFF: Final = 30.0
#: Records (fed, not settled) of one partition beyond which it is paused.
MAX_RECORDS: Final = 1000
#: Bytes of values of one partition in flight beyond which it is paused.
MAX_BYTES: Final = 16 * 1024 * 1024
#: Offsets kept per partition behind its commit point (settled, waiting for an older
#: record to settle), as a multiple of ``max_records``, beyond which it is paused.
BEHIND_FACTOR: Final = 20
#: How long a revocation or a stop waits for deferred confirmations.
SETTLE_SECONDS: Final = 5.0


class Diverter(Protocol):
    """Records that must not wait in their lane, and where they go instead.

    Only ``movable`` records are ever moved. Moves keep the lane's order: when a
    record is diverted, the movable records waiting in its lane (not started yet)
    go first, so a lane never holds a movable record that should come after one
    already moved; and a movable record about to be handled that ``stops`` (say,
    its destination's circuit opened meanwhile) is moved with every movable record
    behind it, instead of waiting in the lane.
    """

    def movable(self, record: Any) -> bool:
        """Whether ``record`` may be moved at all (else it always waits its turn)."""

    def wants(self, record: Any, lane: Lane) -> bool:
        """At feed time: whether the movable ``record`` is moved instead of queued."""

    def stops(self, record: Any, lane: Lane) -> bool:
        """When the movable ``record`` is next: whether it is moved instead of handled."""

    async def move(self, record: Any, lane: Lane) -> None:
        """Move ``record`` away; returns once it is safe elsewhere (it then counts as
        settled). Called in order per lane; an exception makes it try again."""


def lane_by_topic_partition_and_key(record: Any) -> Hashable:
    return (record.topic, record.partition, record.key)


def lane_by_partition_and_key(record: Any) -> Hashable:
    """One lane per key across co-partitioned topics (same partition count and key)."""
    return (record.partition, record.key)


class _Partition:
    """What one assigned partition has in flight, and what of it may be committed."""

    __slots__ = ("bytes", "committed", "fed", "pending", "settled", "sizes", "tp",
                 "unsettled")

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        #: Offsets fed and not yet passed by the commit point, in order.
        self.pending: deque[int] = deque()
        self.settled: set[int] = set()
        self.sizes: dict[int, int] = {}
        #: Records fed and not settled, and the bytes of their values.
        self.unsettled = 0
        self.bytes = 0
        #: Offset after the last record fed (where fetching resumes), and last committed.
        self.fed: int | None = None
        self.committed: int | None = None

    def feed(self, record: Any) -> None:
        offset: int = record.offset
        if self.fed is None and self.committed is None:
            self.committed = offset  # where the group's committed offset had us start
        size = len(record.value or b"")
        self.pending.append(offset)
        self.sizes[offset] = size
        self.unsettled += 1
        self.bytes += size
        self.fed = offset + 1

    def settle(self, offset: int) -> None:
        if offset not in self.sizes or offset in self.settled:
            return  # not ours any more (a rebalance forgot it), or settled twice
        self.settled.add(offset)
        self.unsettled -= 1
        self.bytes -= self.sizes[offset]
        pending = self.pending
        while pending and pending[0] in self.settled:
            first = pending.popleft()
            self.settled.discard(first)
            del self.sizes[first]

    @property
    def in_flight(self) -> int:
        """Records fed and not settled."""
        return self.unsettled

    @property
    def commit_point(self) -> int | None:
        """The lowest unsettled offset (what a restart must read again), if any was fed."""
        if self.pending:
            return self.pending[0]
        return self.fed

    def full(self, max_records: int, max_bytes: int) -> bool:
        return (self.unsettled >= max_records or self.bytes >= max_bytes
                or len(self.pending) >= max_records * BEHIND_FACTOR)


class Lane:
    """One key's records, handled in order by a task that lives while there are some."""

    def __init__(self, key: Hashable, runner: KeyedRunner) -> None:
        self.key = key
        self._runner = runner
        self._queue: deque[Any] = deque()
        self._moving: deque[Any] = deque()
        self._held = 0
        #: Whether the queue's first record is in the handler.
        self._started = False
        self._deferred: list[asyncio.Future[Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._mover: asyncio.Task[None] | None = None
        #: Partitions this lane holds records of (to stop it if one of them goes away).
        self.partitions: set[TopicPartition] = set()

    def __repr__(self) -> str:
        return f"Lane({self.key!r}, queued={len(self._queue)}, moving={len(self._moving)})"

    @property
    def queued(self) -> int:
        """Records in the queue, including the one being handled."""
        return len(self._queue)

    @property
    def moving(self) -> int:
        """Records on the divert chain, not moved yet."""
        return len(self._moving)

    @property
    def idle(self) -> bool:
        return not self._queue and not self._moving

    def push(self, record: Any) -> None:
        self._queue.append(record)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"lane:{self.key!r}")

    def divert(self, record: Any) -> None:
        """Move ``record``, after the movable records waiting in the queue."""
        self._divert_waiting(from_index=1 if self._started else 0)
        self._moving.append(record)
        self._start_mover()

    def _divert_waiting(self, *, from_index: int) -> None:
        diverter = self._runner.diverter
        assert diverter is not None
        queue = list(self._queue)
        kept = queue[:from_index]
        for record in queue[from_index:]:
            (self._moving if diverter.movable(record) else kept).append(record)
        self._queue = deque(kept)
        self._start_mover()

    def _start_mover(self) -> None:
        if self._moving and self._mover is None:
            self._mover = asyncio.create_task(self._move(), name=f"divert:{self.key!r}")

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """While inside, the handler waits (a circuit, a due time): for metrics and tests;
        a held lane holds back its own key only."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1

    def confirm_after(self, *confirmations: asyncio.Future[Any]) -> None:
        """The record being handled is settled only once these futures are done.

        A future that fails or is cancelled never settles it: the partition's commit
        point stays before that record (whoever made the future must retry, not fail).
        """
        self._deferred.extend(confirmations)

    async def close(self) -> None:
        for task in (self._task, self._mover):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._mover = None

    async def _run(self) -> None:
        diverter = self._runner.diverter
        try:
            while self._queue:
                record = self._queue[0]
                if (diverter is not None and diverter.movable(record)
                        and diverter.stops(record, self)):
                    self._divert_waiting(from_index=0)
                    continue
                self._started = True
                try:
                    await self._attempt(self._runner.handler, record)
                finally:
                    self._started = False
                self._queue.popleft()
                deferred, self._deferred = self._deferred, []
                self._runner.handled(record, deferred)
        finally:
            self._task = None
            self._runner.lane_done(self)

    async def _move(self) -> None:
        diverter = self._runner.diverter
        assert diverter is not None
        try:
            while self._moving:
                record = self._moving[0]
                await self._attempt(diverter.move, record)
                self._moving.popleft()
                self._runner.handled(record, [])
        finally:
            self._mover = None
            self._runner.lane_done(self)

    async def _attempt(self, step: Callable[[Any, Lane], Awaitable[None]], record: Any) -> None:
        # An error is a bug or an outage; the record is tried again rather than
        # skipped, since skipping it would drop its events silently.
        backoff = Backoff(0.5, _MAX_BACKOFF)
        while True:
            try:
                await step(record, self)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: handling %s[%d]@%d failed; trying again in %.1f s",
                              self._runner.name, record.topic, record.partition, record.offset,
                              backoff.delay)
            await backoff.wait()


class KeyedRunner(ConsumerRebalanceListener):  # type: ignore[misc]
    """Runs a lane per key for the partitions ``consumer`` is assigned; its rebalance listener.

    Start and subscribe the consumer with ``listener=runner``
    (``auditrelay.kafka.clients.start_consumer``), then ``await runner.run()`` until ``stop``.
    """

    def __init__(self, consumer: AIOKafkaConsumer, handler: Handler, *, name: str,
                 lane_of: Callable[[Any], Hashable] = lane_by_topic_partition_and_key,
                 diverter: Diverter | None = None, prepare: Prepare | None = None,
                 max_records: int = MAX_RECORDS, max_bytes: int = MAX_BYTES,
                 commit_interval: float = 1.0, poll_timeout_ms: int = 200) -> None:
        self._consumer = consumer
        self.handler = handler
        self.diverter = diverter
        self.name = name
        self._lane_of = lane_of
        self._prepare = prepare
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._commit_interval = commit_interval
        self._poll_timeout_ms = poll_timeout_ms
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._revoked: dict[TopicPartition, _Partition] = {}
        self._lanes: dict[Hashable, Lane] = {}
        #: Deferred confirmations per record still pending: (tp, offset) -> futures.
        self._confirming: dict[tuple[TopicPartition, int], list[asyncio.Future[Any]]] = {}
        self._settled_event = asyncio.Event()
        self._stopping = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._last_commit = 0.0

    # -- inspection (tests, metrics) ---------------------------------------------------------

    @property
    def lanes(self) -> dict[Hashable, Lane]:
        return dict(self._lanes)

    def in_flight(self, tp: TopicPartition) -> int:
        part = self._partitions.get(tp)
        return part.in_flight if part is not None else 0

    def commit_point(self, tp: TopicPartition) -> int | None:
        part = self._partitions.get(tp) or self._revoked.get(tp)
        return part.commit_point if part is not None else None

    # -- rebalance listener ------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        for tp in revoked:
            part = self._partitions.pop(tp, None)
            if part is not None:
                self._revoked[tp] = part
        parts = [part for tp, part in self._revoked.items() if tp in revoked]
        # What is handled but not yet confirmed is usually confirmed within milliseconds.
        await self._settle({part.tp for part in parts}, SETTLE_SECONDS)
        await self._commit(parts)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            part = self._revoked.pop(tp, None)
            if part is not None and part.fed is not None:
                # Its records are in lanes already; fetch what follows them.
                self._consumer.seek(tp, part.fed)
            self._partitions[tp] = part or _Partition(tp)
        gone, self._revoked = self._revoked, {}
        if gone:
            await self._drop(set(gone))
        if self._prepare is not None:
            await self._prepare(set(assigned))

    # -- loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        backoff = Backoff(0.5, _MAX_BACKOFF)
        while not self._stopping.is_set():
            fetched = await fetch(self._consumer, backoff, self.name,
                                  timeout_ms=self._poll_timeout_ms)
            if fetched is None:
                continue
            for tp, records in fetched.items():
                part = self._partitions.get(tp)
                if part is None:  # fetched before the listener ran; should not happen
                    part = self._partitions[tp] = _Partition(tp)
                for record in records:
                    self._feed(part, record)
            self._reconcile_pauses()
            if time.monotonic() - self._last_commit >= self._commit_interval:
                await self._commit(list(self._partitions.values()))

    def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        """Stop every lane and commit what is settled; call after ``run`` returned."""
        lanes = list(self._lanes.values())
        await asyncio.gather(*(lane.close() for lane in lanes))
        self._lanes.clear()
        await self._settle(set(self._partitions), SETTLE_SECONDS)
        await self._commit(list(self._partitions.values()))
        self._partitions.clear()
        self._revoked.clear()

    # -- feeding and settling ----------------------------------------------------------------

    def _feed(self, part: _Partition, record: Any) -> None:
        part.feed(record)
        key = self._lane_of(record)
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = Lane(key, self)
        lane.partitions.add(part.tp)
        if self.diverter is not None and self.diverter.wants(record, lane):
            lane.divert(record)
        else:
            lane.push(record)

    def handled(self, record: Any, deferred: list[asyncio.Future[Any]]) -> None:
        """Called by a lane: ``record`` is handled; settled once ``deferred`` are done."""
        tp = TopicPartition(record.topic, record.partition)
        pending = [f for f in deferred if not f.done() or f.cancelled() or f.exception()]
        if not pending:
            self._settle_one(tp, record.offset)
            return
        self._confirming[tp, record.offset] = pending
        confirmed = functools.partial(self._confirmed, tp, record.offset)
        for future in pending:
            future.add_done_callback(confirmed)

    def _confirmed(self, tp: TopicPartition, offset: int, _future: object = None) -> None:
        futures = self._confirming.get((tp, offset))
        if futures is None or not all(f.done() for f in futures):
            return
        if any(f.cancelled() or f.exception() is not None for f in futures):
            return  # never settled: the commit point stays before it
        del self._confirming[tp, offset]
        self._settle_one(tp, offset)

    def _settle_one(self, tp: TopicPartition, offset: int) -> None:
        part = self._partitions.get(tp) or self._revoked.get(tp)
        if part is None:
            return
        was_full = part.full(self._max_records, self._max_bytes)
        part.settle(offset)
        self._settled_event.set()
        if was_full and not part.full(self._max_records, self._max_bytes):
            self._reconcile_pauses()

    def lane_done(self, lane: Lane) -> None:
        """Called by a lane's task as it ends: an idle lane is forgotten."""
        if lane.idle and self._lanes.get(lane.key) is lane:
            del self._lanes[lane.key]

    async def _settle(self, tps: set[TopicPartition], timeout: float) -> None:
        """Wait, at most ``timeout`` s, until no record of ``tps`` waits for confirmations."""
        deadline = time.monotonic() + timeout
        while any(tp in tps for tp, _ in self._confirming):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                waiting = sum(1 for tp, _ in self._confirming if tp in tps)
                log.warning("%s: %d handled record(s) not confirmed; their offsets stay "
                            "uncommitted", self.name, waiting)
                return
            self._settled_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled_event.wait(), remaining)

    async def _drop(self, gone: set[TopicPartition]) -> None:
        """Stop the lanes holding records of partitions that went to another worker.

        Should such a lane also hold records of a partition we keep (lanes shared by
        topics that were not assigned alike), that partition starts over at its commit
        point: its records in the stopped lane are read again, never skipped.
        """
        lanes = [lane for lane in self._lanes.values() if lane.partitions & gone]
        restart = set().union(*(lane.partitions for lane in lanes)) - gone
        if restart:
            lanes = [lane for lane in self._lanes.values()
                     if lane.partitions & (gone | restart)]
        for lane in lanes:
            del self._lanes[lane.key]
        await asyncio.gather(*(lane.close() for lane in lanes))
        for key in [k for k in self._confirming if k[0] in gone | restart]:
            del self._confirming[key]
        for tp in restart:
            part = self._partitions.get(tp)
            if part is None:
                continue
            point = part.commit_point
            if point is not None:
                self._consumer.seek(tp, point)
            fresh = self._partitions[tp] = _Partition(tp)
            fresh.committed = part.committed

    def _reconcile_pauses(self) -> None:
        assignment = self._consumer.assignment()
        paused = self._consumer.paused()
        want = {tp for tp, part in self._partitions.items()
                if tp in assignment and part.full(self._max_records, self._max_bytes)}
        if want - paused:
            self._consumer.pause(*(want - paused))
        resume = {tp for tp in paused if tp not in want and tp in assignment}
        if resume:
            self._consumer.resume(*resume)

    async def _commit(self, parts: list[_Partition]) -> None:
        self._last_commit = time.monotonic()
        offsets: dict[TopicPartition, int] = {}
        for part in parts:
            point = part.commit_point
            if point is not None and point != part.committed:
                offsets[part.tp] = point
        if not offsets:
            return
        if not await commit(self._consumer, offsets, self.name):
            return
        for part in parts:
            if part.tp in offsets:
                part.committed = offsets[part.tp]
