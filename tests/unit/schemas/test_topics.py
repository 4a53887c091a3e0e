from __future__ import annotations

import pytest

from auditrelay.schemas.topics import (
    DAY_MS,
    RETRY_TIERS,
    TopicNames,
    static_topic_specs,
)


def test_names_follow_the_prefix() -> None:
    names = TopicNames("acme.")
    assert names.events == "acme.events"
    assert names.destinations == "acme.destinations"
    assert names.dlq == "acme.dlq"
    assert names.delivery_status == "acme.delivery-status"
    assert names.delivery_attempts == "acme.delivery-attempts"
    assert names.deliveries == "acme.deliveries"
    assert names.parked == "acme.parked"
    assert names.legacy_destination_prefix == "acme.dest."
    assert names.retry("5m") == "acme.retry.5m"


def test_unknown_retry_tier_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown retry tier '7m'"):
        TopicNames().retry("7m")


def test_static_specs_carry_the_contract_cleanup_policies() -> None:
    specs = {s.name: s for s in static_topic_specs(TopicNames(), partitions=6)}
    expected = {"audit.events", "audit.destinations", "audit.dlq", "audit.delivery-status",
                "audit.delivery-attempts", "audit.deliveries", "audit.parked"} | {
                    f"audit.retry.{t}" for t in RETRY_TIERS}
    assert set(specs) == expected
    assert specs["audit.destinations"].config == {"cleanup.policy": "compact"}
    assert specs["audit.delivery-status"].config == {"cleanup.policy": "compact"}
    assert specs["audit.events"].config["retention.ms"] == str(7 * DAY_MS)
    assert specs["audit.dlq"].config["retention.ms"] == str(30 * DAY_MS)
    assert all(specs[f"audit.retry.{t}"].config["cleanup.policy"] == "delete"
               for t in RETRY_TIERS)
    assert specs["audit.events"].partitions == 6
    assert specs["audit.destinations"].partitions == 1


def test_deliveries_and_parked_share_their_partition_count_and_key() -> None:
    specs = {s.name: s for s in static_topic_specs(TopicNames(), 6, delivery_partitions=12)}
    for name in ("audit.deliveries", "audit.parked"):
        assert specs[name].partitions == 12
        assert specs[name].config == {"cleanup.policy": "delete",
                                      "retention.ms": str(7 * DAY_MS)}
        assert specs[name].key == "destination id"
    assert specs["audit.events"].partitions == 6
    # Without a count of their own they have the keyed topics' one.
    fallback = {s.name: s for s in static_topic_specs(TopicNames(), 3)}
    assert fallback["audit.deliveries"].partitions == fallback["audit.parked"].partitions == 3


def test_no_topic_is_per_destination() -> None:
    names = TopicNames()
    specs = static_topic_specs(names, 6, delivery_partitions=12)
    assert not [s for s in specs if s.name.startswith(names.legacy_destination_prefix)]


def test_group_ids_are_shared_only_under_the_default_prefix() -> None:
    assert TopicNames().group_id("auditrelay-delivery") == "auditrelay-delivery"
    assert TopicNames("test.x.").group_id("auditrelay-delivery") == "auditrelay-delivery-test.x"


def test_each_stage_has_its_group_under_the_prefix() -> None:
    default = TopicNames()
    assert (default.router_group, default.archive_group, default.delivery_group,
            default.retry_group, default.app_group) == (
        "auditrelay-router", "auditrelay-archive", "auditrelay-delivery", "auditrelay-retry",
        "auditrelay")
    names = TopicNames("test.x.")
    assert (names.router_group, names.archive_group, names.delivery_group,
            names.retry_group, names.app_group) == (
        "auditrelay-router-test.x", "auditrelay-archive-test.x", "auditrelay-delivery-test.x",
        "auditrelay-retry-test.x", "auditrelay-test.x")


def test_a_prefix_owns_its_topics_and_its_faust_internal_topics() -> None:
    names = TopicNames("test.x.")
    assert names.owns("test.x.events")
    assert names.owns("auditrelay-test.x-__assignor-__leader")
    assert not names.owns("test.y.events")
    assert not names.owns("auditrelay-__assignor-__leader")
    assert not TopicNames().owns("auditrelay-__assignor-__leader")
