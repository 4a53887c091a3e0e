"""`topics ensure` and `kafka status` on the three-broker cluster (issue 15)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from auditrelay.kafka.admin import describe_configs
from auditrelay.ops.kafka_local import LocalCluster
from auditrelay.ops.topics import ensure_topics
from auditrelay.schemas.settings import Settings
from auditrelay.schemas.topics import static_topic_specs
from tests.support.cleanup import topics_cleaned_up
from tests.support.settings import make_settings

pytestmark = [pytest.mark.cluster]


@pytest.fixture
def settings(kafka_cluster: LocalCluster, cluster_admin: AdminClient, unique_name: str,
             tmp_path: Path) -> Iterator[Settings]:
    settings = make_settings(tmp_path, kafka_cluster.bootstrap, f"test.{unique_name}.",
                             topic_partitions=2, delivery_partitions=2)
    with topics_cleaned_up(cluster_admin, settings.topics):
        yield settings


def test_status_shows_three_nodes_a_quorum_leader_and_full_replication(
        kafka_cluster: LocalCluster) -> None:
    status = kafka_cluster.status()
    assert status.running == 3
    assert status.voters == (1, 2, 3)
    assert status.leader in (1, 2, 3)
    assert status.registered == (1, 2, 3)
    assert status.under_replicated == ()
    assert f"controller quorum: leader node {status.leader}" in "\n".join(status.lines())


def test_ensure_creates_three_replicas_two_in_sync_and_reports_drift(
        settings: Settings, cluster_admin: AdminClient) -> None:
    report = ensure_topics(settings)
    assert report.replication == "replication factor 3, min.insync.replicas 2 (3 brokers)"
    names = [spec.name for spec in static_topic_specs(settings.topics, 2, 2)]
    assert sorted(report.created) == sorted(names)
    meta = cluster_admin.list_topics(timeout=10).topics
    for name in names:
        assert {len(p.replicas) for p in meta[name].partitions.values()} == {3}, name
    configs = describe_configs(cluster_admin, names)
    assert {configs[name]["min.insync.replicas"] for name in names} == {"2"}
    assert ensure_topics(settings).drifted == []

    # Settings that want other replication: both differences are drift; `fix` alters
    # min.insync.replicas back and leaves the replication factor (a reassignment).
    other = settings.model_copy(update={"topic_replication_factor": 2,
                                        "topic_min_insync_replicas": 1})
    drifted = ensure_topics(other).drifted
    events = settings.topics.events
    assert {(d.setting, d.expected, d.actual) for d in drifted if d.topic == events} == {
        ("replication factor", "2", "3"), ("min.insync.replicas", "1", "2")}
    fixed = ensure_topics(other, fix=True)
    assert {d.setting for d in fixed.fixed} == {"min.insync.replicas"}
    assert describe_configs(cluster_admin, [events])[events]["min.insync.replicas"] == "1"
    assert {d.setting for d in ensure_topics(other).drifted} == {"replication factor"}
