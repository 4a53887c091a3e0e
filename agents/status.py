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

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError as AIOKafkaError
from pydantic import ValidationError

from agents.kafka_admin import admin_client, partitions_of
from agents.kafka_io import RecordSink, consumer, start_consumer
from schemas.errors import KafkaError, TopicError
from schemas.status import DeliveryAttempt, DestinationStatus
from schemas.topics import TopicNames

__all__ = ["StatusBoard", "StatusFollower", "StatusPublisher"]

log = logging.getLogger(__name__)


class StatusBoard:
    """Latest status per destination, and a signal when any changes."""

    def __init__(self) -> None:
        self._statuses: dict[str, DestinationStatus] = {}
        self._changed = asyncio.Event()

    def get(self, destination_id: str) -> DestinationStatus | None:
        return self._statuses.get(destination_id)

    def update(self, status: DestinationStatus) -> bool:
        """Keep ``status`` unless the board holds a newer one; True if it was kept."""
        current = self._statuses.get(status.destination_id)
        if current is not None and current.updated_at > status.updated_at:
            return False
        self._statuses[status.destination_id] = status
        self._notify()
        return True

    def forget(self, destination_id: str) -> None:
        if self._statuses.pop(destination_id, None) is not None:
            self._notify()

    async def wait_change(self, timeout: float | None) -> None:
        """Return when any status changes, or after ``timeout`` seconds."""
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)

    def _notify(self) -> None:
        # Waiters hold the old event; a fresh one serves the next change.
        self._changed.set()
        self._changed = asyncio.Event()


class StatusPublisher:
    """Writes attempt records and statuses; a failure to write them is logged, not raised.

    Status records are for dashboards and for other workers' circuits; losing
    one delays a circuit at worst (``agents.outcomes.circuit_open`` half-opens),
    so it must not stop a delivery.
    """

    def __init__(self, sink: RecordSink, names: TopicNames, board: StatusBoard) -> None:
        self._sink = sink
        self._names = names
        self._board = board

    async def status(self, status: DestinationStatus) -> None:
        self._board.update(status)
        await self._send(self._names.delivery_status, status.destination_id,
                         status.model_dump_json().encode())

    async def attempt(self, attempt: DeliveryAttempt) -> None:
        await self._send(self._names.delivery_attempts, attempt.destination_id,
                         attempt.model_dump_json().encode())

    async def _send(self, topic: str, key: str, value: bytes) -> None:
        try:
            await self._sink.send(topic, key.encode(), value)
        except KafkaError as exc:
            log.warning("status record of %s for %s not written: %s", key, topic, exc)


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
        self._ends: dict[TopicPartition, int] = {}
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
        self._ends = {tp: end for tp, end in ends.items() if end > begins[tp]}
        if not self._ends:
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
                if tp in self._ends and records[-1].offset + 1 >= self._ends[tp]:
                    del self._ends[tp]
            if not self._ends:
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

