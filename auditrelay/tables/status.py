"""Delivery status: produces ``audit.delivery-attempts`` and ``audit.delivery-status``,
and follows ``audit.delivery-status`` to know every destination's circuit.

``StatusBoard`` is the in-process view of the latest status per destination.
It learns from this worker's own verdicts at once (``StatusPublisher`` updates
it before producing) and from other workers through ``StatusFollower``, which
reads the compacted topic from its beginning. Of two statuses for one
destination the board keeps the newer (``updated_at``), so a follower that
lags never undoes a fresher local verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError as AIOKafkaError
from pydantic import ValidationError

from auditrelay.kafka.admin import admin_client, partitions_of
from auditrelay.kafka.backoff import Backoff
from auditrelay.kafka.clients import RecordSink, consumer, start_consumer
from auditrelay.kafka.topic_reader import CatchUp
from auditrelay.schemas.errors import KafkaError, TopicError
from auditrelay.schemas.status import DeliveryAttempt, DestinationStatus
from auditrelay.schemas.topics import TopicNames

__all__ = ["COALESCE_SECONDS", "StatusBoard", "StatusFollower", "StatusPublisher",
           "same_but_timestamps"]

log = logging.getLogger(__name__)

#: At most one status per destination per this interval when only its timestamps changed.
COALESCE_SECONDS: Final = 1.0
_FIRST_BACKOFF = 0.5
_MAX_BACKOFF = 10.0


class StatusBoard:
    """Latest status per destination, and a signal when any changes."""

    def __init__(self) -> None:
        self._statuses: dict[str, DestinationStatus] = {}
        self._changed = asyncio.Event()
        #: Per destination, for waiters of one destination only (a lane waiting for its
        #: circuit): a change elsewhere, hundreds a second, wakes none of them.
        self._changed_one: dict[str, asyncio.Event] = {}

    def get(self, destination_id: str) -> DestinationStatus | None:
        return self._statuses.get(destination_id)

    def update(self, status: DestinationStatus) -> bool:
        """Keep ``status`` unless the board holds a newer one; True if it was kept."""
        current = self._statuses.get(status.destination_id)
        if current is not None and current.updated_at > status.updated_at:
            return False
        self._statuses[status.destination_id] = status
        self._notify(status.destination_id)
        return True

    def forget(self, destination_id: str) -> None:
        if self._statuses.pop(destination_id, None) is not None:
            self._notify(destination_id)

    async def wait_change(self, timeout: float | None, destination_id: str | None = None,
                          ) -> bool:
        """Return when any status (or ``destination_id``'s) changes (True), or after
        ``timeout`` seconds (False)."""
        if destination_id is None:
            changed = self._changed
        else:
            changed = self._changed_one.setdefault(destination_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)
        return changed.is_set()

    def _notify(self, destination_id: str) -> None:
        # Waiters hold the old event; a fresh one serves the next change.
        self._changed.set()
        self._changed = asyncio.Event()
        one = self._changed_one.pop(destination_id, None)
        if one is not None:
            one.set()


def same_but_timestamps(older: DestinationStatus, newer: DestinationStatus) -> bool:
    """True when ``newer`` tells nothing ``older`` did not, but later.

    Only ``last_delivery_at`` and ``updated_at`` may differ (and a first delivery
    time is news); state, result, code, error, failure count and next attempt
    must be the same. Such a status may be coalesced with the next one.
    """
    return (older.destination_id == newer.destination_id
            and older.state == newer.state
            and older.last_delivery_ok == newer.last_delivery_ok
            and older.last_status_code == newer.last_status_code
            and older.last_error == newer.last_error
            and older.consecutive_failures == newer.consecutive_failures
            and older.next_attempt_at == newer.next_attempt_at
            and older.workspace_id == newer.workspace_id
            and (older.last_delivery_at is None) == (newer.last_delivery_at is None)
            and older.updated_at <= newer.updated_at)


@dataclass(eq=False)
class _Outgoing:
    """A record for the producer, and who waits for its confirmation."""

    topic: str
    key: bytes
    value: bytes
    confirmed: asyncio.Future[None]
    #: A status record: when it must be written again, the newest status is written instead.
    status: DestinationStatus | None = None
    backoff: Backoff = field(default_factory=lambda: Backoff(_FIRST_BACKOFF, _MAX_BACKOFF))
    timer: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class _Held:
    """A status coalesced with the next: written when its interval ends (or when replaced)."""

    status: DestinationStatus
    timer: asyncio.TimerHandle


class StatusPublisher:
    """Writes attempt records and statuses without making the caller wait for the broker.

    ``status`` and ``attempt`` hand the record to the producer (through one
    writer task, started by ``start``) and return a future that is done once the
    broker confirmed it: the lane (``auditrelay.kafka.keyed.Lane.confirm_after``)
    commits the batch's offset only then, and meanwhile goes on. A record the
    broker does not confirm is written again after a backoff, until it is (a
    status is replaced by the destination's newest one, so an old status never
    lands after a newer one): a failure to write never stops a delivery, and is
    never dropped either.

    ``audit.delivery-status`` is compacted: only the latest status per
    destination matters. A status that differs from the last one written only
    in its timestamps (``same_but_timestamps``: another delivery that went
    well) is written at most once per ``coalesce_seconds`` per destination:
    within the interval it is held, replaced by newer ones, and written at the
    interval's end; its confirmation is that of the equivalent status written
    before it. Any other change is written at once, in order.
    """

    def __init__(self, sink: RecordSink, names: TopicNames, board: StatusBoard, *,
                 coalesce_seconds: float = COALESCE_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._sink = sink
        self._names = names
        self._board = board
        self._coalesce = coalesce_seconds
        self._clock = clock
        self._queue: deque[_Outgoing] = deque()
        self._wakeup = asyncio.Event()
        #: Per destination: the last status handed to the producer, when, and its confirmation.
        self._written: dict[str, tuple[DestinationStatus, float, asyncio.Future[None]]] = {}
        self._held: dict[str, _Held] = {}
        self._unconfirmed: set[asyncio.Future[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._retrying: set[_Outgoing] = set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._write(), name="status-publisher")

    async def stop(self, timeout: float = 5.0) -> None:
        """Write what is held, wait (at most ``timeout`` s) for confirmations, then stop."""
        self.flush()
        if self._unconfirmed and self._task is not None:
            _, pending = await asyncio.wait(set(self._unconfirmed), timeout=timeout)
            if pending:
                log.warning("%d status/attempt record(s) not confirmed at stop", len(pending))
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for out in self._retrying:
            if out.timer is not None:
                out.timer.cancel()
        self._retrying.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def flush(self) -> None:
        """Write every held status now."""
        for destination_id in list(self._held):
            self._release(destination_id)

    @property
    def unconfirmed(self) -> int:
        return len(self._unconfirmed)

    def status(self, status: DestinationStatus) -> asyncio.Future[None]:
        """Put ``status`` on the board and on its way to the topic; done once confirmed."""
        destination_id = status.destination_id
        previous = self._board.get(destination_id)
        self._board.update(status)
        written = self._written.get(destination_id)
        # Coalesced only while the board still agrees with what this worker wrote last
        # (another worker's newer status in between is news to answer at once).
        if (self._coalesce > 0 and written is not None and previous is not None
                and same_but_timestamps(written[0], previous)
                and same_but_timestamps(written[0], status)):
            held = self._held.get(destination_id)
            if held is not None:
                held.status = status
                return written[2]
            due = written[1] + self._coalesce
            if self._clock() < due:
                loop = asyncio.get_running_loop()
                timer = loop.call_later(due - self._clock(), self._release, destination_id)
                self._timers.add(timer)
                self._held[destination_id] = _Held(status, timer)
                return written[2]
        else:
            self._drop_held(destination_id)  # superseded by this one
        return self._send_status(status)

    def attempt(self, attempt: DeliveryAttempt) -> asyncio.Future[None]:
        """Put ``attempt`` on its way to the attempts topic; done once confirmed."""
        return self._put(_Outgoing(self._names.delivery_attempts,
                                   attempt.destination_id.encode(),
                                   attempt.model_dump_json().encode(), self._future()))

    # -- internals ---------------------------------------------------------------------------

    def _future(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._unconfirmed.add(future)
        future.add_done_callback(self._unconfirmed.discard)
        return future

    def _send_status(self, status: DestinationStatus) -> asyncio.Future[None]:
        future = self._future()
        self._written[status.destination_id] = (status, self._clock(), future)
        return self._put(_Outgoing(self._names.delivery_status,
                                   status.destination_id.encode(),
                                   status.model_dump_json().encode(), future, status))

    def _drop_held(self, destination_id: str) -> None:
        held = self._held.pop(destination_id, None)
        if held is not None:
            held.timer.cancel()
            self._timers.discard(held.timer)

    def _release(self, destination_id: str) -> None:
        held = self._held.pop(destination_id, None)
        if held is None:
            return
        held.timer.cancel()
        self._timers.discard(held.timer)
        self._send_status(held.status)

    def _put(self, out: _Outgoing) -> asyncio.Future[None]:
        self._queue.append(out)
        self._wakeup.set()
        return out.confirmed

    async def _write(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            out = queue.popleft()
            try:
                sent = await self._sink.enqueue(out.topic, out.key, out.value)
            except KafkaError as exc:
                self._again(out, exc)
                continue
            except Exception as exc:
                # A bug, not an outage; still the writer must outlive it (lanes wait on it).
                log.exception("status publisher: record for %s not queued", out.topic)
                self._again(out, exc)
                continue
            sent.add_done_callback(partial(self._answered, out))

    def _answered(self, out: _Outgoing, sent: asyncio.Future[Any]) -> None:
        if sent.cancelled():
            self._again(out, "cancelled")
        elif (exc := sent.exception()) is not None:
            self._again(out, exc)
        elif not out.confirmed.done():
            out.confirmed.set_result(None)

    def _again(self, out: _Outgoing, problem: object) -> None:
        delay = out.backoff.next()
        log.warning("record of %s for %s not confirmed (%s); again in %.1f s",
                    out.key.decode(), out.topic, problem, delay)
        out.timer = asyncio.get_running_loop().call_later(delay, self._retry, out)
        self._retrying.add(out)

    def _retry(self, out: _Outgoing) -> None:
        self._retrying.discard(out)
        if out.status is not None:
            # The newest status known, never an older one over a newer.
            newest = self._board.get(out.status.destination_id)
            if newest is not None and newest.updated_at >= out.status.updated_at:
                out.status = newest
                out.value = newest.model_dump_json().encode()
        self._put(out)


def parse_status(value: bytes | None) -> DestinationStatus | None:
    if value is None:
        return None
    try:
        return DestinationStatus.model_validate_json(value)
    except ValidationError:
        return None


class StatusFollower:
    """Reads ``audit.delivery-status`` from the beginning into a board, then follows it."""

    def __init__(self, bootstrap: str, topic: str, board: StatusBoard, *,
                 client_id: str = "auditrelay-status-follower") -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._board = board
        self._consumer = consumer(bootstrap, group_id=None, client_id=client_id)
        self._progress = CatchUp(topic, {})
        self._caught_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        partitions = await asyncio.to_thread(partitions_of, admin_client(self._bootstrap),
                                             self._topic)
        await start_consumer(self._consumer)
        try:
            tps = [TopicPartition(self._topic, p) for p in partitions]
            self._consumer.assign(tps)
            await self._consumer.seek_to_beginning(*tps)
            begins = await self._consumer.beginning_offsets(tps)
            ends = await self._consumer.end_offsets(tps)
        except AIOKafkaError as exc:
            await self._consumer.stop()
            raise TopicError(f"cannot read {self._topic}: {exc}") from exc
        self._progress = CatchUp.between(self._topic,
                                         {tp.partition: o for tp, o in begins.items()},
                                         {tp.partition: o for tp, o in ends.items()})
        if self._progress.done:
            self._caught_up.set()
        self._task = asyncio.create_task(self._run(), name="status-follower")

    async def wait_caught_up(self, timeout: float) -> bool:
        """True once everything written before ``start`` is on the board."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._caught_up.wait(), timeout)
        return self._caught_up.is_set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            try:
                fetched = await self._consumer.getmany(timeout_ms=500)
            except AIOKafkaError as exc:
                log.warning("status follower: fetching failed: %s", exc)
                await asyncio.sleep(1.0)
                continue
            for tp, records in fetched.items():
                for record in records:
                    self._apply(record.key, record.value)
                if records:
                    self._progress.read(tp.partition, records[-1].offset)
            if self._progress.done:
                self._caught_up.set()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None:
            return
        if value is None:
            self._board.forget(key.decode())
            return
        status = parse_status(value)
        if status is None:
            log.warning("status follower: unreadable status for %s ignored", key.decode())
            return
        self._board.update(status)

