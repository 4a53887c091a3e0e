from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from auditrelay.schemas.batches import (
    REASON_DELETED,
    REASON_DISABLED,
    REASON_EXHAUSTED,
    REASON_REJECTED,
    BatchMeta,
)
from auditrelay.schemas.destinations import DestinationConfig
from auditrelay.schemas.status import DestinationStatus
from auditrelay.wire.client import DeliveryResult, Part
from auditrelay.wire.outcomes import (
    Decision,
    attempt_record,
    circuit_open,
    decide,
    next_status,
    refusal,
)
from auditrelay.wire.retry_schedule import RetrySchedule

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
SCHEDULE = RetrySchedule((10, 60), jitter=0, give_up_seconds=3600)
META = BatchMeta("msg_01", "dst_1", "ws1", 3, NOW_MS - 500)


def result(status: int | None = 200, *, error: str | None = None,
           retry_after: float | None = None) -> DeliveryResult:
    ok = status is not None and 200 <= status < 300
    return DeliveryResult(ok=ok, status_code=status, latency_ms=12,
                          error=error if error or ok else (error or f"HTTP {status}"),
                          retry_after_seconds=retry_after, gone=status == 410)


def config(**changes: object) -> DestinationConfig:
    values: dict[str, object] = {"id": "dst_1", "workspace_id": "ws1", "name": "siem",
                                     "url": "https://siem.example", "enabled": True,
                                     "secret_encrypted": "v1:x", "version": 1,
                                     "updated_at": NOW - timedelta(hours=1)}
    values.update(changes)
    return DestinationConfig.model_validate(values)


def status(state: str, *, updated: datetime = NOW,
           next_at: datetime | None = None) -> DestinationStatus:
    return DestinationStatus(destination_id="dst_1", workspace_id="ws1",
                             state=state, updated_at=updated,  # type: ignore[arg-type]
                             next_attempt_at=next_at, consecutive_failures=2)


def decide_now(res: DeliveryResult, meta: BatchMeta = META) -> Decision:
    return decide(res, meta, NOW_MS, SCHEDULE, random.Random(0))


# -- refusal -------------------------------------------------------------------------------

def test_enabled_destination_is_not_refused() -> None:
    assert refusal(config(), None) is None
    assert refusal(config(), status("ok")) is None
    assert refusal(config(), status("failing")) is None


def test_deleted_and_disabled_destinations_are_refused_with_their_reason() -> None:
    deleted = refusal(None, None)
    assert deleted is not None
    assert deleted.reason == REASON_DELETED
    disabled = refusal(config(enabled=False, disabled_reason="gone"), None)
    assert disabled is not None
    assert disabled.reason == REASON_DISABLED
    assert "gone" in disabled.detail
    no_plan = refusal(config(forwarding=False), None)
    assert no_plan is not None
    assert "plan" in no_plan.detail


def test_a_newer_disabled_status_vetoes_an_older_enabled_config() -> None:
    vetoed = refusal(config(), status("disabled"))
    assert vetoed is not None
    assert vetoed.reason == REASON_DISABLED


def test_a_config_re_enabled_after_the_disabled_status_wins() -> None:
    assert refusal(config(updated_at=NOW + timedelta(seconds=1)), status("disabled")) is None


# -- decide --------------------------------------------------------------------------------

def test_2xx_is_delivered_with_the_meta_unchanged() -> None:
    assert decide_now(result(204)) == Decision("delivered", META)


def test_410_disables_and_dead_letters_as_disabled() -> None:
    decision = decide_now(result(410))
    assert decision.kind == "disabled"
    assert decision.disable == "gone"
    assert decision.meta.reason == REASON_DISABLED
    assert "410" in decision.meta.detail


def test_first_failure_goes_to_the_first_tier() -> None:
    decision = decide_now(result(500))
    assert decision.kind == "retry"
    assert decision.tier == "10s"
    assert decision.disable is None
    assert decision.meta.attempt == 1
    assert decision.meta.first_attempt_ms == NOW_MS
    assert decision.meta.due_ms == NOW_MS + 10_000
    assert decision.meta.last_error == "HTTP 500"
    assert decision.meta.batch_id == META.batch_id  # identical on every retry


def test_later_failures_climb_the_tiers_and_keep_the_first_attempt() -> None:
    meta = META.evolve(attempt=1, first_attempt_ms=NOW_MS - 20_000, due_ms=NOW_MS)
    decision = decide_now(result(None, error="ConnectError: refused"), meta)
    assert decision.tier == "1m"
    assert decision.meta.attempt == 2
    assert decision.meta.first_attempt_ms == NOW_MS - 20_000
    assert decision.meta.due_ms == NOW_MS + 60_000
    assert decision.meta.last_error == "ConnectError: refused"


def test_redirects_are_failures() -> None:
    assert decide_now(result(302, error="HTTP 302: redirect not followed")).kind == "retry"


def test_retry_after_sets_the_due_time_within_the_schedule_range() -> None:
    assert decide_now(result(503, retry_after=30)).meta.due_ms == NOW_MS + 30_000
    assert decide_now(result(429, retry_after=9999)).meta.due_ms == NOW_MS + 60_000


def test_failure_after_the_give_up_time_dead_letters_and_auto_disables() -> None:
    meta = META.evolve(attempt=5, first_attempt_ms=NOW_MS - 3600_000)
    decision = decide_now(result(500), meta)
    assert decision.kind == "dead_letter"
    assert decision.disable == "failing"
    assert decision.meta.reason == REASON_EXHAUSTED
    assert decision.meta.detail == "HTTP 500"
    assert decision.meta.attempt == 6


# -- circuit -------------------------------------------------------------------------------

def test_circuit_is_open_only_while_failing() -> None:
    grace = timedelta(seconds=60)
    assert not circuit_open(None, NOW, grace)
    assert not circuit_open(status("ok"), NOW, grace)
    assert not circuit_open(status("disabled"), NOW, grace)
    assert circuit_open(status("failing", next_at=NOW + timedelta(seconds=10)), NOW, grace)


def test_circuit_half_opens_when_the_announced_retry_never_reported() -> None:
    grace = timedelta(seconds=60)
    late = status("failing", next_at=NOW - timedelta(seconds=61))
    assert not circuit_open(late, NOW, grace)
    assert circuit_open(status("failing", next_at=NOW - timedelta(seconds=59)), NOW, grace)
    assert not circuit_open(status("failing", updated=NOW - timedelta(hours=1)), NOW, grace)


# -- status and attempt records ------------------------------------------------------------

def test_status_after_a_retry_is_failing_with_the_next_attempt() -> None:
    decision = decide_now(result(503))
    new = next_status(status("ok"), decision, result(503), NOW)
    assert new.state == "failing"
    assert new.consecutive_failures == 3
    assert new.next_attempt_at == NOW + timedelta(seconds=10)
    assert new.last_delivery_ok is False
    assert new.last_status_code == 503


def test_status_after_delivery_is_ok_and_resets_failures() -> None:
    new = next_status(status("failing"), decide_now(result(200)), result(200), NOW)
    assert new.state == "ok"
    assert new.consecutive_failures == 0
    assert new.next_attempt_at is None
    assert new.last_delivery_at == NOW
    assert new.last_delivery_ok is True


def test_status_after_a_refusal_is_disabled_without_a_delivery() -> None:
    decision = Decision("dead_letter", META.evolve(reason=REASON_DELETED, detail="deleted"))
    new = next_status(None, decision, None, NOW)
    assert new.state == "disabled"
    assert new.last_delivery_at is None
    assert new.last_error == "deleted"


def test_attempt_records_count_attempts() -> None:
    delivered = attempt_record(decide_now(result(200)), result(200), NOW)
    assert (delivered.outcome, delivered.attempt, delivered.latency_ms) == ("delivered", 1, 12)
    retried = attempt_record(decide_now(result(500)), result(500), NOW)
    assert (retried.outcome, retried.attempt, retried.tier) == ("retry", 1, "10s")
    assert retried.next_attempt_at == NOW + timedelta(seconds=10)
    second = META.evolve(attempt=1, first_attempt_ms=NOW_MS)
    assert attempt_record(decide_now(result(200), second), result(200), NOW).attempt == 2
    refused = attempt_record(Decision("dead_letter", META.evolve(detail="gone")), None, NOW)
    assert (refused.outcome, refused.attempt, refused.status_code) == ("dead_letter", 0, None)


# -- parts of a batch (kinds whose receivers take or refuse single events) ------------------

def test_a_partly_taken_batch_retries_only_what_is_left() -> None:
    left = Part(b'[{"id":"aud_3"}]', 1, "1 of 3 busy")
    res = DeliveryResult(ok=False, status_code=200, latency_ms=5, error="1 of 3 busy",
                         retry_after_seconds=None, gone=False, pending=left)
    decision = decide_now(res)
    assert decision.kind == "retry"
    assert decision.body == left.body
    assert decision.meta.events == 1
    assert decision.meta.batch_id == META.batch_id


def test_events_refused_for_good_are_set_apart_and_the_rest_is_delivered() -> None:
    refused = Part(b'[{"id":"aud_2"}]', 1, "mapper_parsing_exception")
    res = DeliveryResult(ok=True, status_code=200, latency_ms=5, error=None,
                         retry_after_seconds=None, gone=False, rejected=refused)
    decision = decide_now(res)
    assert decision.kind == "delivered"
    assert decision.rejected == refused


def test_a_batch_refused_whole_is_dead_lettered_and_the_receiver_is_not_failing() -> None:
    refused = Part(b"[]", 3, "Splunk HEC: invalid data format (code 6)")
    res = DeliveryResult(ok=True, status_code=400, latency_ms=5, error=refused.detail,
                         retry_after_seconds=None, gone=False, rejected=refused)
    decision = decide_now(res)
    assert decision.kind == "dead_letter"
    assert decision.meta.reason == REASON_REJECTED
    assert decision.disable is None
    after = next_status(status("failing"), decision, res, NOW)
    assert after.state == "ok"
    assert after.last_delivery_ok is False
    assert after.last_error == refused.detail
