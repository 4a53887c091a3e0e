"""The arithmetic of the Kafka gauges: backlog, retry tiers, DLQ size, lag, ages."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from auditrelay.observability.collector import (
    Groups,
    PartitionOffsets,
    backlog_of,
    delivery_topics,
    destination_states,
    oldest_ages,
    second_group_lag,
    summarise,
    waiting_destinations,
)
from auditrelay.schemas.topics import RETRY_TIERS, TopicNames

NAMES = TopicNames("t.")
GROUPS = Groups.of(NAMES)


@pytest.mark.parametrize(("offsets", "start", "pending"), [
    (PartitionOffsets(0, 10, 4), 4, 6),
    (PartitionOffsets(0, 10, 10), 10, 0),
    (PartitionOffsets(0, 10, None), 0, 10),  # nothing committed: all of it waits
    (PartitionOffsets(7, 10, 3), 7, 3),  # records before 7 were deleted by retention
    (PartitionOffsets(5, 5, None), 5, 0),  # empty
    (PartitionOffsets(0, 4, 9), 9, 0),  # a commit past the end (topic recreated) is not < 0
])
def test_pending_is_from_the_committed_offset_or_the_start_to_the_end(
        offsets: PartitionOffsets, start: int, pending: int) -> None:
    assert (offsets.start, offsets.pending) == (start, pending)


def test_groups_follow_the_prefix_like_the_agents() -> None:
    assert Groups.of(TopicNames()) == Groups("auditrelay-router", "auditrelay-delivery",
                                             "auditrelay-retry", "auditrelay-archive")
    assert Groups("auditrelay-router-t", "auditrelay-delivery-t", "auditrelay-retry-t",
                  "auditrelay-archive-t") == GROUPS


def test_a_second_group_lags_from_its_own_offsets_and_only_once_it_committed() -> None:
    offsets = {("t.events", 0): PartitionOffsets(0, 10, 10),
               ("t.events", 1): PartitionOffsets(5, 20, 20)}
    assert second_group_lag(offsets, {("t.events", 0): 4, ("t.events", 1): None}) == 6 + 15
    assert second_group_lag(offsets, {("t.events", 0): 10, ("t.events", 1): 20}) == 0
    assert second_group_lag(offsets, {}) is None  # never ran: not reported


def test_the_delivery_group_reads_deliveries_and_parked() -> None:
    assert delivery_topics(NAMES) == ("t.deliveries", "t.parked")


def test_backlog_counts_each_destination_s_waiting_records_and_zero_for_the_others() -> None:
    waiting = ["dst_a", "dst_b", "dst_a", "dst_gone"]
    assert backlog_of(waiting, ["dst_a", "dst_b", "dst_c"]) == {
        "dst_a": 2, "dst_b": 1, "dst_c": 0,
        "dst_gone": 1}  # deleted, its batches not dropped yet: still shown
    assert backlog_of([], []) == {}


def test_summary_of_every_kind_of_topic() -> None:
    offsets = {
        ("t.events", 0): PartitionOffsets(0, 100, 90),
        ("t.events", 1): PartitionOffsets(0, 50, None),
        ("t.deliveries", 0): PartitionOffsets(0, 8, 5),
        ("t.deliveries", 1): PartitionOffsets(0, 2, 2),
        ("t.parked", 0): PartitionOffsets(0, 4, None),
        ("t.parked", 1): PartitionOffsets(1, 1, None),
        ("t.dest.dst_a", 0): PartitionOffsets(0, 9, 0),  # a legacy topic: no gauge's business
        ("t.retry.10s", 0): PartitionOffsets(0, 3, 1),
        ("t.retry.10s", 1): PartitionOffsets(0, 1, None),
        ("t.retry.1m", 0): PartitionOffsets(4, 4, 4),
        ("t.dlq", 0): PartitionOffsets(2, 9),
        ("t.dlq", 1): PartitionOffsets(0, 1),
        ("t.delivery-status", 0): PartitionOffsets(0, 1000),  # not a gauge's business
    }
    summary = summarise(offsets, NAMES, GROUPS)
    assert summary.tiers == {**dict.fromkeys(RETRY_TIERS, 0), "10s": 3}
    assert summary.dead_letters == 8
    assert summary.lag == {
        (GROUPS.router, "t.events"): 60,
        (GROUPS.delivery, "t.deliveries"): 3,
        (GROUPS.delivery, "t.parked"): 4,
        (GROUPS.retry, "t.retry.10s"): 3,
        (GROUPS.retry, "t.retry.1m"): 0,
    }


def test_without_any_batch_the_delivery_lag_is_zero() -> None:
    assert summarise({}, NAMES, GROUPS).lag == {(GROUPS.delivery, "t.deliveries"): 0,
                                               (GROUPS.delivery, "t.parked"): 0}


def test_only_destinations_with_something_waiting_are_shown() -> None:
    backlog = {"dst_idle": 0, "dst_backlog": 3, "dst_retrying": 0}
    ages = {"dst_idle": 0.0, "dst_backlog": 2.5, "dst_retrying": 40.0}
    assert waiting_destinations(backlog, ages) == {"dst_backlog", "dst_retrying"}
    assert waiting_destinations({"dst_idle": 0}, {}) == set()


def test_oldest_ages_are_zero_where_nothing_waits() -> None:
    ages = oldest_ages({"dst_a": 1_000_000, "dst_c": 1_009_000}, ["dst_a", "dst_b"], 1010.5)
    assert ages == {"dst_a": 10.5, "dst_b": 0.0}  # dst_c is gone: not reported
    assert oldest_ages({"dst_a": 2_000_000}, ["dst_a"], 1000.0) == {"dst_a": 0.0}  # clock skew


def test_destination_states_count_enabled_and_disabled_by_reason_with_zeros_for_the_known() -> None:
    configs = [SimpleNamespace(enabled=True, disabled_reason=None),
               SimpleNamespace(enabled=True, disabled_reason=None),
               SimpleNamespace(enabled=False, disabled_reason="failing"),
               SimpleNamespace(enabled=False, disabled_reason=None),  # an old record: manual
               SimpleNamespace(enabled=False, disabled_reason="quota")]
    assert destination_states(configs) == {
        ("enabled", ""): 2, ("disabled", "manual"): 1, ("disabled", "gone"): 0,
        ("disabled", "failing"): 1, ("disabled", "quota"): 1}
    assert destination_states([]) == {("enabled", ""): 0, ("disabled", "manual"): 0,
                                      ("disabled", "gone"): 0, ("disabled", "failing"): 0}
