"""The worker's log at INFO with many delivery partitions: one line of counts per
rebalance, never the libraries' per-partition tables (issue #19, point 4)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from auditrelay.ops.topics import ensure_topics
from auditrelay.schemas.settings import Settings
from tests.support.cleanup import topics_cleaned_up
from tests.support.e2e import pipeline_settings
from tests.support.pipeline import (
    DestinationSpec,
    WorkerProcess,
    create_destinations,
    publish_outbox,
)
from tests.support.polling import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

DESTINATIONS = 50
#: Partitions of ``deliveries`` and of ``parked``: many, as a large deployment has.
DELIVERY_PARTITIONS = 50
#: What aiokafka says, per partition, at a rebalance (Faust prints the sets as tables).
CHATTER = ("assigned partitions", "Updating subscribed topics", "Metadata for topic",
           "Topic Partition Set", "joining group", "Joined group")


@pytest.fixture
def settings(kafka_bootstrap: str, kafka_admin: AdminClient, unique_name: str,
             tmp_path: Path) -> Iterator[Settings]:
    settings = pipeline_settings(kafka_bootstrap, unique_name, tmp_path, topic_partitions=1,
                                 delivery_partitions=DELIVERY_PARTITIONS)
    with topics_cleaned_up(kafka_admin, settings.topics):
        ensure_topics(settings)
        yield settings


def test_a_rebalance_over_many_partitions_is_one_line_of_counts(settings: Settings,
                                                                 tmp_path: Path) -> None:
    specs = [DestinationSpec(n // 20, f"https://siem{n}.example.com/hook", (), False)
             for n in range(DESTINATIONS)]
    create_destinations(settings, DESTINATIONS // 20 + 1, specs)
    assert publish_outbox(settings) > 0
    group = settings.topics.delivery_group
    summary = re.compile(rf"INFO\] group {re.escape(group)}: assigned (\d+) partitions of "
                         rf"(\d+) topics \(was (\d+); (\d+) new, (\d+) gone\)")
    with WorkerProcess(settings, tmp_path / "worker.log") as worker:
        worker.wait_ready()

        def summaries() -> list[tuple[int, ...]]:
            return [tuple(int(n) for n in m.groups()) for m in summary.finditer(worker.output())]

        # Every partition of deliveries and parked, the two topics the group reads.
        every = 2 * DELIVERY_PARTITIONS
        wait_until(lambda: (every, 2, 0, every, 0) in summaries(), 20,
                   lambda: f"no first assignment: {summaries()}" + worker.tail())
        output = worker.output()
    lines = output.splitlines()
    assert not [line for line in lines if any(word in line for word in CHATTER)], output
    # No table rows (Faust's "| topic | partitions |") and no logging errors.
    assert not [line for line in lines if line.startswith(("|", "+"))], output
    assert "Logging error" not in output
    assert len(output.encode()) < 20_000, output
