"""``auditrelay.tables.status.StatusPublisher`` against the real broker: records are confirmed
without the caller waiting, and statuses that only move timestamps are coalesced,
while every other change is written at once and in order."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka.admin import AdminClient

from auditrelay.kafka.admin import create_topics
from auditrelay.kafka.clients import RecordSink
from auditrelay.schemas.status import DeliveryAttempt, DestinationStatus
from auditrelay.schemas.topics import TopicNames, TopicSpec
from auditrelay.tables.status import StatusBoard, StatusPublisher
from tests.support.cleanup import topics_cleaned_up
from tests.support.clock import ManualClock
from tests.support.pipeline import read_records

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def names(kafka_admin: AdminClient, unique_name: str) -> Iterator[TopicNames]:
    topics = TopicNames(prefix=f"test.{unique_name}.")
    specs = [TopicSpec(topics.delivery_status, 1, {"cleanup.policy": "compact"}),
             TopicSpec(topics.delivery_attempts, 1)]
    with topics_cleaned_up(kafka_admin, topics):
        create_topics(kafka_admin, specs)
        yield topics


def status(seconds: float, state: str = "ok") -> DestinationStatus:
    at = T0 + timedelta(seconds=seconds)
    failing = state == "failing"
    return DestinationStatus(
        destination_id="dst_1", workspace_id="ws1", state=state,  # type: ignore[arg-type]
        last_delivery_at=at, last_delivery_ok=not failing,
        last_status_code=503 if failing else 200, last_error="HTTP 503" if failing else None,
        consecutive_failures=1 if failing else 0,
        next_attempt_at=at + timedelta(seconds=10) if failing else None, updated_at=at)




@pytest.mark.asyncio
async def test_statuses_are_coalesced_only_when_nothing_but_time_changed(
        kafka_bootstrap: str, names: TopicNames) -> None:
    sink = RecordSink(kafka_bootstrap)
    await sink.start()
    board = StatusBoard()
    clock = ManualClock()
    # A long interval that only the injected clock ends: nothing depends on timing.
    publisher = StatusPublisher(sink, names, board, coalesce_seconds=60, clock=clock)
    publisher.start()
    try:
        first = publisher.status(status(1))
        held = [publisher.status(status(2)), publisher.status(status(3))]
        assert all(f is first for f in held)  # confirmed with the equivalent status before
        await asyncio.wait_for(first, 30)
        assert board.get("dst_1") == status(3)  # the board knows at once
        failing = publisher.status(status(4, "failing"))  # news: at once, replaces the held
        recovered = publisher.status(status(5))
        clock.now += 61  # the interval is over: the next equivalent one goes out at once
        later = publisher.status(status(6))
        last = publisher.status(status(7))  # held again, until stop writes it
        attempt = publisher.attempt(DeliveryAttempt(
            destination_id="dst_1", workspace_id="ws1", batch_id="msg_1", attempt=1,
            events=3, at=T0, outcome="delivered", status_code=200, latency_ms=2))
        await asyncio.wait_for(asyncio.gather(failing, recovered, later, last, attempt), 30)
    finally:
        await publisher.stop()
        await sink.stop()
    written = await asyncio.to_thread(read_records, kafka_bootstrap, names.delivery_status,
                                      lambda seen: len(seen) >= 5, 30)
    statuses = [DestinationStatus.model_validate_json(m.value() or b"") for m in written]
    assert statuses == [status(1), status(4, "failing"), status(5), status(6), status(7)]
    attempts = await asyncio.to_thread(read_records, kafka_bootstrap, names.delivery_attempts,
                                       lambda seen: len(seen) >= 1, 30)
    assert len(attempts) == 1
