"""Replication of new topics, resolved from the broker count and the settings."""

from __future__ import annotations

import pytest

from auditrelay.schemas.errors import TopicError
from auditrelay.schemas.settings import Settings
from auditrelay.schemas.topics import (
    Replication,
    TopicSpec,
    resolve_replication,
    with_replication,
)


@pytest.mark.parametrize(("brokers", "expected"), [
    (1, Replication(1, 1)), (2, Replication(1, 1)), (3, Replication(3, 2)),
    (5, Replication(3, 2)),
])
def test_defaults_follow_the_broker_count(brokers: int, expected: Replication) -> None:
    assert resolve_replication(brokers) == expected


def test_settings_override_the_defaults() -> None:
    assert resolve_replication(3, 2) == Replication(2, 2)
    assert resolve_replication(3, 3, 1) == Replication(3, 1)
    assert resolve_replication(5, 5, 3) == Replication(5, 3)
    assert resolve_replication(2, 2) == Replication(2, 1)


def test_a_default_minimum_never_exceeds_the_factor() -> None:
    assert resolve_replication(3, 1) == Replication(1, 1)


def test_a_factor_the_cluster_cannot_place_is_refused() -> None:
    with pytest.raises(TopicError, match="replication factor 3 needs 3 brokers; the cluster "
                                         "has 1"):
        resolve_replication(1, 3)


def test_a_minimum_above_the_factor_is_refused() -> None:
    with pytest.raises(TopicError, match=r"min\.insync\.replicas 3 exceeds the replication "
                                         r"factor 2"):
        resolve_replication(3, 2, 3)


def test_with_replication_sets_the_factor_and_the_config() -> None:
    spec = TopicSpec("audit.events", 6, {"cleanup.policy": "delete"})
    [out] = with_replication([spec], Replication(3, 2))
    assert out.replication_factor == 3
    assert dict(out.config) == {"cleanup.policy": "delete", "min.insync.replicas": "2"}
    assert spec.replication_factor is None
    assert "min.insync.replicas" not in spec.config


def test_settings_read_both_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().topic_replication_factor is None
    assert Settings().topic_min_insync_replicas is None
    monkeypatch.setenv("AUDITRELAY_TOPIC_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("AUDITRELAY_TOPIC_MIN_INSYNC_REPLICAS", "2")
    settings = Settings()
    assert (settings.topic_replication_factor, settings.topic_min_insync_replicas) == (3, 2)


def test_settings_refuse_a_minimum_above_the_factor() -> None:
    with pytest.raises(ValueError, match="cannot exceed topic_replication_factor"):
        Settings(topic_replication_factor=2, topic_min_insync_replicas=3)
