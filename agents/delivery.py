"""Delivery agent: consumes the per-destination topics ``audit.dest.*``; produces to
``audit.retry.{tier}``, ``audit.dlq``, ``audit.delivery-attempts`` and
``audit.delivery-status``.

A pattern subscription (group ``TopicNames.delivery_group``) picks up a new
destination's topic within ``destination_poll_seconds`` (the metadata refresh),
without a restart. Each destination's partition has its own lane
(``auditrelay.kafka.partitions``), so its batches go out strictly in order and a hanging
receiver delays nobody else. A destination whose status is ``failing`` has an
open circuit: its lane holds its next batch, and its partition stays paused,
until the retry agent reports it ``ok`` again (or it is disabled, and its
backlog goes to the dead-letter topic).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from auditrelay.agents.dispatch import BatchProcessor
from auditrelay.kafka.partitions import Lane
from auditrelay.tables.status import StatusBoard
from auditrelay.wire.outcomes import circuit_open

__all__ = ["DeliveryHandler", "circuit_grace", "destination_pattern"]

#: How often a lane waiting on an open circuit looks at the clock (half-open check).
_CIRCUIT_RECHECK_SECONDS = 5.0


def destination_pattern(destination_prefix: str) -> str:
    """The subscription pattern of every destination topic under a prefix."""
    return f"^{re.escape(destination_prefix)}.+"


def circuit_grace(longest_wait: float) -> timedelta:
    """How long past its announced retry a failing destination's circuit stays open."""
    return timedelta(seconds=max(60.0, longest_wait))


class DeliveryHandler:
    """The lane handler of destination partitions: wait for the circuit, then attempt."""

    def __init__(self, processor: BatchProcessor, board: StatusBoard, grace: timedelta) -> None:
        self._processor = processor
        self._board = board
        self._grace = grace

    async def __call__(self, record: Any, lane: Lane) -> None:
        meta = self._processor.parse(record)
        if meta is None:
            await self._processor.dead_letter_malformed(record)
            return
        await self.wait_circuit(meta.destination_id, lane)
        await self._processor.process(meta, record.value or b"", lane.confirm_after)

    async def wait_circuit(self, destination_id: str, lane: Lane) -> None:
        """Return once the destination's circuit is closed (or half-open)."""
        if not self._is_open(destination_id):
            return
        with lane.holding():
            while self._is_open(destination_id):
                await self._board.wait_change(_CIRCUIT_RECHECK_SECONDS)

    def _is_open(self, destination_id: str) -> bool:
        return circuit_open(self._board.get(destination_id), datetime.now(UTC), self._grace)
