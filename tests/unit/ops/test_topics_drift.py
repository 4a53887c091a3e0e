from __future__ import annotations

from auditrelay.ops.topics import Drift, EnsureReport, find_drift
from auditrelay.schemas.topics import TopicSpec

SPEC = TopicSpec("audit.events", 6, {"cleanup.policy": "delete", "retention.ms": "604800000"})


def test_matching_topic_has_no_drift() -> None:
    configs = {"audit.events": {"cleanup.policy": "delete", "retention.ms": "604800000",
                                "segment.ms": "1"}}
    assert find_drift([SPEC], {"audit.events": 6}, configs) == []


def test_more_partitions_than_asked_is_not_drift() -> None:
    configs = {"audit.events": dict(SPEC.config)}
    assert find_drift([SPEC], {"audit.events": 12}, configs) == []


def test_each_difference_is_reported() -> None:
    configs = {"audit.events": {"cleanup.policy": "compact"}}
    drifts = find_drift([SPEC], {"audit.events": 3}, configs)
    assert drifts == [
        Drift("audit.events", "partitions", "6", "3"),
        Drift("audit.events", "cleanup.policy", "delete", "compact"),
        Drift("audit.events", "retention.ms", "604800000", "(unset)"),
    ]
    assert str(drifts[1]) == (
        "audit.events: cleanup.policy is compact, the contract wants delete")


def test_a_topic_whose_partition_count_is_exact_drifts_with_more_too() -> None:
    spec = TopicSpec("audit.deliveries", 12, {})
    assert find_drift([spec], {"audit.deliveries": 12}, {}, exact={"audit.deliveries"}) == []
    assert find_drift([spec], {"audit.deliveries": 24}, {}, exact={"audit.deliveries"}) == [
        Drift("audit.deliveries", "partitions", "12", "24")]
    assert find_drift([spec], {"audit.deliveries": 24}, {}) == []


def test_report_lines() -> None:
    drift = Drift("t", "retention.ms", "1", "2")
    report = EnsureReport(created=["a"], unchanged=["b"], drifted=[drift])
    assert report.lines() == ["created   a", "ok        b",
                              "DRIFTED   t: retention.ms is 2, the contract wants 1"]


def test_another_replication_factor_is_drift_the_settings_name() -> None:
    spec = TopicSpec("audit.events", 6, {"min.insync.replicas": "2"}, replication_factor=3)
    configs = {"audit.events": {"min.insync.replicas": "1"}}
    drifts = find_drift([spec], {"audit.events": 6}, configs, replicas={"audit.events": 1})
    assert drifts == [Drift("audit.events", "replication factor", "3", "1"),
                      Drift("audit.events", "min.insync.replicas", "2", "1")]
    assert str(drifts[0]) == "audit.events: replication factor is 1, the settings want 3"
    ok = {"audit.events": {"min.insync.replicas": "2"}}
    assert find_drift([spec], {"audit.events": 6}, ok, replicas={"audit.events": 3}) == []


def test_a_spec_without_a_factor_never_drifts_on_replicas() -> None:
    configs = {"audit.events": dict(SPEC.config)}
    assert find_drift([SPEC], {"audit.events": 6}, configs, replicas={"audit.events": 2}) == []


def test_report_lines_name_the_replication_first() -> None:
    report = EnsureReport(created=["a"], replication="replication factor 3, "
                          "min.insync.replicas 2 (3 brokers)")
    assert report.lines() == [
        "replicas  replication factor 3, min.insync.replicas 2 (3 brokers)", "created   a"]
