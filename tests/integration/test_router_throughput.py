"""The router's producer on a busy event loop, against the real broker (issue #19).

aiokafka keeps one open batch per partition and one produce request per broker in
flight; once a partition's batch is full, ``send`` waits until the request before it is
answered. Each such wait costs the router turns of the event loop, which the delivery
lanes keep busy: with Faust's default 16 KiB batches a round of a thousand 1 KiB
batches took dozens of round trips, and at 10 000 destinations the router fell behind by
tens of seconds (docs/scaling.md). This test routes such a round while another task
holds the loop for a few milliseconds at every turn, as thousands of lanes do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from auditrelay.agents import router
from auditrelay.agents.app import create_app
from auditrelay.agents.routing import OutRecord
from auditrelay.ops.topics import ensure_topics
from auditrelay.schemas.settings import Settings
from auditrelay.tables.registry import DestinationRegistry, SharedFollower
from tests.support.cleanup import topics_cleaned_up
from tests.support.settings import make_settings

#: A round at 10 000 destinations: a thousand delivery batches of one event each.
ROUND_RECORDS = 1000
RECORD_BYTES = 1024
#: How long the busy loop's other work holds it at every turn.
HOLD_SECONDS = 0.005
#: With 16 KiB batches the round needed 80+ round trips (more than 2 s here, measured
#: 2.4 - 4 s); with the router's batch size a handful (measured 0.1 - 0.3 s).
MAX_SECONDS = 1.5


@pytest.fixture
def settings(kafka_bootstrap: str, kafka_admin: AdminClient, unique_name: str,
             tmp_path: Path) -> Iterator[Settings]:
    settings = make_settings(tmp_path, kafka_bootstrap, f"test.{unique_name}.",
                             topic_partitions=2, delivery_partitions=12)
    with topics_cleaned_up(kafka_admin, settings.topics, f"test-{unique_name}-"):
        ensure_topics(settings)
        yield settings


async def _hog(stop: asyncio.Event) -> None:
    """Other work on the loop: each turn holds it ``HOLD_SECONDS`` (time.sleep blocks)."""
    while not stop.is_set():
        time.sleep(HOLD_SECONDS)
        await asyncio.sleep(0)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_round_goes_out_in_few_round_trips_on_a_busy_loop(
        settings: Settings, unique_name: str) -> None:
    app = create_app(settings, app_id=f"test-{unique_name}")
    routing = router.register(app, settings, SharedFollower(app, settings.kafka_bootstrap,
                                                            settings.topics.destinations),
                              registry=DestinationRegistry())
    records = [OutRecord(settings.topics.deliveries, f"dst_{n:05d}".encode(),
                         b"x" * RECORD_BYTES, []) for n in range(ROUND_RECORDS)]
    await app.start()
    stop = asyncio.Event()
    hog: asyncio.Task[None] | None = None
    try:
        # Warm: metadata of the topic known, connection open.
        await routing.publish(records[:12])
        hog = asyncio.create_task(_hog(stop))
        started = time.perf_counter()
        await routing.publish(records)
        took = time.perf_counter() - started
    finally:
        stop.set()
        if hog is not None:
            await hog
        await app.stop()
    print("TOOK", took)
    assert took < MAX_SECONDS, f"a round of {ROUND_RECORDS} records took {took:.2f} s"
