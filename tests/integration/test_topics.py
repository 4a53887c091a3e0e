"""`topics ensure` against the real broker: creation, configs read back, drift, fix."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
)

from auditrelay.kafka.admin import describe_configs
from auditrelay.ops.topics import ensure_topics
from auditrelay.schemas.settings import Settings
from auditrelay.schemas.topics import DAY_MS, RETRY_TIERS
from tests.support.cleanup import topics_cleaned_up
from tests.support.polling import wait_until
from tests.support.settings import make_settings


def _alter(admin: AdminClient, topic: str, key: str, value: str) -> None:
    """Alter one topic config and wait until the broker reports it (it applies it async)."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result()
    wait_until(lambda: describe_configs(admin, [topic])[topic].get(key) == value, 10,
               f"{topic}: {key} never became {value}")


@pytest.fixture
def prefixed(kafka_bootstrap: str, kafka_admin: AdminClient, unique_name: str,
             tmp_path: Path) -> Iterator[Settings]:
    """Settings whose topic prefix is unique to this test; its topics are deleted after."""
    settings = make_settings(tmp_path, kafka_bootstrap, f"test.{unique_name}.",
                             topic_partitions=2, delivery_partitions=3)
    with topics_cleaned_up(kafka_admin, settings.topics):
        yield settings


def test_ensure_creates_every_contract_topic_with_its_config(
        prefixed: Settings, kafka_admin: AdminClient) -> None:
    report = ensure_topics(prefixed)
    names = prefixed.topics
    expected = {names.events, names.destinations, names.dlq, names.delivery_status,
                names.delivery_attempts, names.deliveries, names.parked} | {
                    names.retry(t) for t in RETRY_TIERS}
    assert set(report.created) == expected

    meta = kafka_admin.list_topics(timeout=10).topics
    assert len(meta[names.events].partitions) == 2
    assert len(meta[names.destinations].partitions) == 1
    assert len(meta[names.deliveries].partitions) == 3
    assert len(meta[names.parked].partitions) == 3
    configs = describe_configs(kafka_admin, sorted(expected))
    assert configs[names.destinations]["cleanup.policy"] == "compact"
    assert configs[names.delivery_status]["cleanup.policy"] == "compact"
    for name in (names.events, names.delivery_attempts, names.deliveries, names.parked,
                 names.retry("10h")):
        assert configs[name]["cleanup.policy"] == "delete"
        assert configs[name]["retention.ms"] == str(7 * DAY_MS)
    assert configs[names.dlq]["retention.ms"] == str(30 * DAY_MS)


def test_ensure_is_idempotent(prefixed: Settings) -> None:
    ensure_topics(prefixed)
    again = ensure_topics(prefixed)
    assert again.created == []
    assert again.drifted == []
    assert len(again.unchanged) == 7 + len(RETRY_TIERS)


def test_drift_is_reported_then_fixed(prefixed: Settings, kafka_admin: AdminClient) -> None:
    ensure_topics(prefixed)
    status = prefixed.topics.delivery_status
    _alter(kafka_admin, status, "cleanup.policy", "delete")

    report = ensure_topics(prefixed)
    assert [(d.topic, d.setting, d.actual) for d in report.drifted] == [
        (status, "cleanup.policy", "delete")]

    fixed = ensure_topics(prefixed, fix=True)
    assert fixed.fixed == report.drifted
    assert describe_configs(kafka_admin, [status])[status]["cleanup.policy"] == "compact"
    assert ensure_topics(prefixed).drifted == []


def test_a_delivery_topic_with_another_partition_count_is_drift_never_altered(
        prefixed: Settings, kafka_admin: AdminClient) -> None:
    ensure_topics(prefixed)
    parked = prefixed.topics.parked
    for future in kafka_admin.create_partitions([NewPartitions(parked, 4)]).values():
        future.result()
    wait_until(lambda: len(kafka_admin.list_topics(parked, timeout=10).topics[parked]
                           .partitions) == 4, 10, f"{parked} never had 4 partitions")

    report = ensure_topics(prefixed, fix=True)
    assert [(d.topic, d.setting, d.expected, d.actual) for d in report.drifted] == [
        (parked, "partitions", "3", "4")]
    assert report.fixed == []
    assert len(kafka_admin.list_topics(parked, timeout=10).topics[parked].partitions) == 4


def test_cli_reports_drift_with_a_failing_exit(prefixed: Settings,
                                               kafka_admin: AdminClient) -> None:
    env = {**os.environ, "AUDITRELAY_TOPIC_PREFIX": prefixed.topic_prefix,
           "AUDITRELAY_KAFKA_BOOTSTRAP": prefixed.kafka_bootstrap,
           "AUDITRELAY_TOPIC_PARTITIONS": "2"}
    argv = [sys.executable, "-m", "auditrelay.ops", "topics", "ensure"]
    first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    assert f"created   {prefixed.topics.events}" in first.stdout

    events = prefixed.topics.events
    _alter(kafka_admin, events, "retention.ms", "1000")
    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60,
                            check=False)
    assert second.returncode == 1
    assert f"DRIFTED   {events}: retention.ms is 1000" in second.stdout
    assert "drifted from the contract; rerun with --fix" in second.stderr
