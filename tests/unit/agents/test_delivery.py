"""auditrelay.agents.delivery without a broker: who is parked, and what is diverted."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from aiokafka import TopicPartition

from auditrelay.agents.delivery import QUEUE_LIMIT, DeliveryHandler, Parking
from auditrelay.kafka.keyed import Lane
from auditrelay.observability import metrics
from auditrelay.schemas.errors import BrokerUnavailableError
from auditrelay.schemas.status import DestinationStatus
from auditrelay.schemas.topics import TopicNames
from auditrelay.tables.status import StatusBoard

NAMES = TopicNames("audit.")
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


@dataclass
class Rec:
    topic: str
    partition: int
    offset: int
    key: bytes | None


@dataclass
class FakeLane:
    queued: int = 0
    moving: int = 0


def test_parking_ends_with_the_last_parked_batch_and_nothing_on_its_way() -> None:
    parking = Parking()
    parking.note(0, b"dst_a", 10)
    parking.note(0, b"dst_a", 12)
    assert parking.parked(0, b"dst_a")
    assert not parking.parked(1, b"dst_a")  # another partition: another worker's key space
    assert not parking.settled(0, b"dst_a", 10, moving=0)  # not the last one
    assert not parking.settled(0, b"dst_a", 12, moving=1)  # another is being parked
    assert parking.parked(0, b"dst_a")
    assert metrics.WORKER_REGISTRY.get_sample_value("auditrelay_parked_destinations") == 1
    assert parking.settled(0, b"dst_a", 12, moving=0)
    assert not parking.parked(0, b"dst_a")
    assert metrics.WORKER_REGISTRY.get_sample_value("auditrelay_parked_destinations") == 0


def test_an_assignment_keeps_only_our_partitions_and_adds_what_the_scan_found() -> None:
    parking = Parking()
    parking.note(0, b"dst_a", 5)
    parking.note(3, b"dst_b", 7)
    parking.assigned({0, 1}, {(1, b"dst_c"): 40, (0, b"dst_a"): 9, (3, b"dst_x"): 1})
    assert (parking.parked(0, b"dst_a"), parking.parked(1, b"dst_c")) == (True, True)
    assert not parking.parked(3, b"dst_b")
    assert not parking.parked(3, b"dst_x")
    assert not parking.settled(0, b"dst_a", 5, moving=0)  # the scan saw a later one at 9
    assert parking.settled(0, b"dst_a", 9, moving=0)
    assert len(parking) == 1


def failing(destination_id: str, next_attempt_at: datetime) -> DestinationStatus:
    return DestinationStatus(destination_id=destination_id, workspace_id="ws_a",
                             state="failing", next_attempt_at=next_attempt_at,
                             consecutive_failures=1, updated_at=NOW)


def handler_with(board: StatusBoard | None = None,
                 found: Mapping[tuple[int, bytes | None], int] | None = None,
                 scan_error: Exception | None = None) -> DeliveryHandler:
    async def park(record: Any) -> int:
        return 100 + int(record.offset)

    async def scan(parked: set[TopicPartition]) -> Mapping[tuple[int, bytes | None], int]:
        if scan_error is not None:
            raise scan_error
        return found or {}

    return DeliveryHandler(cast(Any, None), board or StatusBoard(), timedelta(seconds=60), NAMES,
                           park=park, scan=scan, clock=lambda: NOW)


def wants(handler: DeliveryHandler, record: Rec, lane: FakeLane | None = None) -> bool:
    return handler.wants(record, cast(Lane, lane or FakeLane()))


def test_a_healthy_destination_with_room_in_its_lane_is_attempted_directly() -> None:
    handler = handler_with()
    assert not wants(handler, Rec(NAMES.deliveries, 0, 1, b"dst_a"),
                     FakeLane(queued=QUEUE_LIMIT - 1))


def test_batches_are_parked_behind_an_open_circuit_a_full_lane_or_earlier_parked_ones(
        ) -> None:
    board = StatusBoard()
    board.update(failing("dst_open", NOW + timedelta(seconds=30)))
    board.update(failing("dst_half_open", NOW - timedelta(seconds=61)))
    handler = handler_with(board)
    handler.parking.note(0, b"dst_parked", 3)
    record = Rec(NAMES.deliveries, 0, 9, b"dst_a")
    assert wants(handler, Rec(NAMES.deliveries, 0, 1, b"dst_open"))
    assert not wants(handler, Rec(NAMES.deliveries, 0, 1, b"dst_half_open"))  # a probe
    assert wants(handler, Rec(NAMES.deliveries, 0, 1, b"dst_parked"))
    assert not wants(handler, Rec(NAMES.deliveries, 1, 1, b"dst_parked"))
    assert wants(handler, record, FakeLane(queued=QUEUE_LIMIT))
    assert wants(handler, record, FakeLane(moving=1))
    # What comes back from audit.parked always goes into its lane.
    assert not wants(handler, Rec(NAMES.parked, 0, 1, b"dst_open"), FakeLane(moving=1))
    assert not handler.movable(Rec(NAMES.parked, 0, 1, b"dst_open"))
    assert handler.movable(record)
    # A queued batch whose circuit opened meanwhile leaves the lane when its turn comes.
    lane = cast(Lane, FakeLane())
    assert handler.stops(Rec(NAMES.deliveries, 0, 1, b"dst_open"), lane)
    assert not handler.stops(Rec(NAMES.deliveries, 0, 1, b"dst_half_open"), lane)


@pytest.mark.asyncio
async def test_a_moved_batch_marks_its_destination_parked_up_to_its_offset() -> None:
    handler = handler_with()
    await handler.move(Rec(NAMES.deliveries, 2, 5, b"dst_a"), cast(Lane, FakeLane()))
    assert handler.parking.parked(2, b"dst_a")
    assert handler.parking.settled(2, b"dst_a", 105, moving=0)


@pytest.mark.asyncio
async def test_prepare_reads_the_parked_partitions_of_the_assignment() -> None:
    handler = handler_with(found={(1, b"dst_a"): 4})
    await handler.prepare({TopicPartition(NAMES.deliveries, 1), TopicPartition(NAMES.parked, 1)})
    assert handler.parking.parked(1, b"dst_a")


@pytest.mark.asyncio
async def test_a_failed_scan_is_logged_and_the_assignment_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    handler = handler_with(scan_error=BrokerUnavailableError("no leader"))
    handler.parking.note(0, b"dst_a", 1)
    await handler.prepare({TopicPartition(NAMES.parked, 1)})
    assert "parked partitions not read (no leader)" in caplog.text
    assert len(handler.parking) == 0  # partition 0 is not ours any more
