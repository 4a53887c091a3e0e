"""Delivery agent: consumes ``audit.deliveries`` and ``audit.parked``; produces to
``audit.parked``, ``audit.retry.{tier}``, ``audit.dlq``, ``audit.delivery-attempts`` and
``audit.delivery-status``.

Both topics are keyed by destination id and have the same partition count; one
consumer in group ``TopicNames.delivery_group`` reads both with the range
assignor, so partition *p* of both is always one worker's. Within a partition
every destination has its own lane (``auditrelay.kafka.keyed``): its batches
go out strictly in order, and a receiver that hangs delays nobody else.

Parking: a destination's batch leaves the shared partition for ``audit.parked``
(same partition) instead of waiting in memory when its circuit is open (status
``failing``: its failed batch is in a retry tier), when its lane already holds
``QUEUE_LIMIT`` batches (a slow receiver), or when it has parked batches that are
not delivered yet (so that its order holds); the batches its lane held that were not
started yet go first. A batch of ``audit.deliveries`` therefore never waits for a
circuit in the worker, and the partition's commit point moves on. Parked batches
come back into the same lane, after the one in flight, wait for the circuit, and are
attempted in order; once the last one parked is settled, the destination's new
batches are attempted directly again. ``Parking`` remembers, per destination of our
partitions, the offset of its last parked batch; after a rebalance the new owner
reads what its parked partitions hold beyond the group's committed offset (keys
only) before it handles anything, so it knows who is parked.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from aiokafka import TopicPartition

from auditrelay.agents.dispatch import BatchProcessor
from auditrelay.kafka.keyed import Lane
from auditrelay.observability import metrics
from auditrelay.schemas.errors import AuditRelayError
from auditrelay.schemas.topics import TopicNames
from auditrelay.tables.status import StatusBoard
from auditrelay.wire.outcomes import circuit_open

__all__ = ["QUEUE_LIMIT", "DeliveryHandler", "Parking", "circuit_grace"]

log = logging.getLogger(__name__)

#: How often a lane waiting on an open circuit looks at the clock (half-open check).
_CIRCUIT_RECHECK_SECONDS = 5.0
#: Batches a destination's lane holds in memory (the one in flight included); the
#: next ones are parked.
QUEUE_LIMIT: Final = 4

#: ``park(record)``: produce the record to ``audit.parked``, same partition and key; returns
#: its offset there once the broker confirmed it.
Park = Callable[[Any], Awaitable[int]]
#: ``scan(partitions)``: for each of our ``audit.parked`` partitions, the offset of each
#: key's last record beyond the group's committed offset.
Scan = Callable[[set[TopicPartition]], Awaitable[Mapping[tuple[int, bytes | None], int]]]


def circuit_grace(longest_wait: float) -> timedelta:
    """How long past its announced retry a failing destination's circuit stays open."""
    return timedelta(seconds=max(60.0, longest_wait))


class Parking:
    """Destinations of our partitions with batches on ``audit.parked``: the offset there
    of each one's last parked batch, by (partition, key)."""

    def __init__(self) -> None:
        self._last: dict[tuple[int, bytes | None], int] = {}

    def __len__(self) -> int:
        return len(self._last)

    def parked(self, partition: int, key: bytes | None) -> bool:
        return (partition, key) in self._last

    def note(self, partition: int, key: bytes | None, offset: int) -> None:
        """A batch of ``key`` was parked at ``offset``."""
        self._last[partition, key] = max(offset, self._last.get((partition, key), offset))
        metrics.PARKED_DESTINATIONS.set(len(self._last))

    def settled(self, partition: int, key: bytes | None, offset: int, *, moving: int) -> bool:
        """The parked batch at ``offset`` is settled; True if that ended the parking
        (it was the last one parked, and no other is on its way there)."""
        if moving or self._last.get((partition, key)) != offset:
            return False
        del self._last[partition, key]
        metrics.PARKED_DESTINATIONS.set(len(self._last))
        return True

    def assigned(self, partitions: set[int],
                 found: Mapping[tuple[int, bytes | None], int]) -> None:
        """After a rebalance: only ``partitions`` are ours, and ``found`` is what their
        parked partitions hold (keys whose parked batches are not settled yet)."""
        self._last = {k: v for k, v in self._last.items() if k[0] in partitions}
        for (partition, key), offset in found.items():
            if partition in partitions:
                self.note(partition, key, offset)
        metrics.PARKED_DESTINATIONS.set(len(self._last))


class DeliveryHandler:
    """The delivery stage's lane handler, diverter and assignment hook."""

    def __init__(self, processor: BatchProcessor, board: StatusBoard, grace: timedelta,
                 names: TopicNames, *, park: Park, scan: Scan,
                 parking: Parking | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._processor = processor
        self._board = board
        self._grace = grace
        self._names = names
        self._park = park
        self._scan = scan
        self.parking = parking or Parking()
        self._clock = clock

    # -- the runner's hooks ------------------------------------------------------------------

    async def prepare(self, assigned: set[TopicPartition]) -> None:
        """Learn which destinations of the new assignment have parked batches."""
        parked = {tp for tp in assigned if tp.topic == self._names.parked}
        found: Mapping[tuple[int, bytes | None], int] = {}
        try:
            found = await self._scan(parked) if parked else {}
        except AuditRelayError as exc:
            # Rare (the broker answered the assignment, then not this); the cost is
            # order: a parked destination's new batch may go before its parked ones.
            log.error("delivery: parked partitions not read (%s); destinations parked "
                      "before this rebalance may deliver new batches ahead of parked ones",
                      exc)
        self.parking.assigned({tp.partition for tp in assigned}, found)

    def movable(self, record: Any) -> bool:
        """Batches read from ``audit.deliveries`` may be parked; parked ones wait their turn."""
        return bool(record.topic == self._names.deliveries)

    def wants(self, record: Any, lane: Lane) -> bool:
        """Whether a batch read from ``audit.deliveries`` is parked instead of queued."""
        if record.topic != self._names.deliveries:
            return False
        if lane.moving or self.parking.parked(record.partition, record.key):
            return True  # behind batches parked before it: order
        if lane.queued >= QUEUE_LIMIT:
            return True
        key: bytes | None = record.key
        return key is not None and self._is_open(key.decode("utf-8", "replace"))

    def stops(self, record: Any, lane: Lane) -> bool:
        """A queued batch whose circuit opened meanwhile is parked, not held in memory."""
        key: bytes | None = record.key
        return key is not None and self._is_open(key.decode("utf-8", "replace"))

    async def move(self, record: Any, lane: Lane) -> None:
        offset = await self._park(record)
        self.parking.note(record.partition, record.key, offset)

    async def __call__(self, record: Any, lane: Lane) -> None:
        meta = self._processor.parse(record)
        if meta is None:
            await self._processor.dead_letter_malformed(record)
        else:
            if record.topic == self._names.parked:
                await self.wait_circuit(meta.destination_id, lane)
            await self._processor.process(meta, record.value or b"", lane.confirm_after)
        if record.topic == self._names.parked:
            self.parking.settled(record.partition, record.key, record.offset,
                                 moving=lane.moving)

    # -- the circuit -------------------------------------------------------------------------

    async def wait_circuit(self, destination_id: str, lane: Lane) -> None:
        """Return once the destination's circuit is closed (or half-open)."""
        if not self._is_open(destination_id):
            return
        with lane.holding():
            while self._is_open(destination_id):
                await self._board.wait_change(_CIRCUIT_RECHECK_SECONDS, destination_id)

    def _is_open(self, destination_id: str) -> bool:
        return circuit_open(self._board.get(destination_id), self._clock(), self._grace)
