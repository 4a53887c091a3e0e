"""Pure decisions of delivery: may a batch be sent, what an attempt's result means,
whether a destination's circuit is open, and what its status becomes.

The agents (``auditrelay.agents.delivery``, ``auditrelay.agents.retry``) do the I/O; everything they
decide is decided here, from values, so it is tested without Kafka or HTTP.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from auditrelay.schemas.batches import (
    REASON_DELETED,
    REASON_DISABLED,
    REASON_EXHAUSTED,
    REASON_REJECTED,
    BatchMeta,
)
from auditrelay.schemas.destinations import DestinationConfig
from auditrelay.schemas.status import DeliveryAttempt, DestinationStatus
from auditrelay.wire.client import DeliveryResult, Part
from auditrelay.wire.retry_schedule import RetrySchedule

__all__ = [
    "Decision",
    "Refusal",
    "attempt_record",
    "circuit_open",
    "decide",
    "ms_to_datetime",
    "next_status",
    "refusal",
]

Kind = Literal["delivered", "retry", "dead_letter", "disabled"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a batch is not sent at all, but dead-lettered."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after one attempt.

    ``meta`` is the batch's metadata as it goes on (to a retry tier or the DLQ), and
    ``body`` its body when only part of the batch goes on (the receiver took the rest);
    ``disable`` names the reason the destination is disabled with, if it is;
    ``rejected`` are events the receiver refused for good, dead-lettered beside.
    """

    kind: Kind
    meta: BatchMeta
    tier: str | None = None
    disable: str | None = None
    body: bytes | None = None
    rejected: Part | None = None


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def refusal(config: DestinationConfig | None, status: DestinationStatus | None,
            ) -> Refusal | None:
    """Why a batch for this destination must not be sent, or None if it may be.

    The latest status vetoes too when it says ``disabled`` and is newer than the
    config: the worker that disabled a destination (410, or retries exhausted)
    publishes that status at once, while the config saying so travels through
    the database, the outbox and ``audit.destinations``. A config changed after
    that (re-enabled by its owner) wins again.
    """
    if config is None:
        return Refusal(REASON_DELETED, "the destination does not exist (deleted)")
    if not config.enabled:
        return Refusal(REASON_DISABLED,
                       f"the destination is disabled ({config.disabled_reason or 'manual'})")
    if not config.forwarding:
        return Refusal(REASON_DISABLED, "the workspace's plan does not include forwarding")
    if (status is not None and status.state == "disabled"
            and status.updated_at >= config.updated_at):
        return Refusal(REASON_DISABLED, f"the destination was disabled: {status.last_error}")
    return None


def decide(result: DeliveryResult, meta: BatchMeta, now_ms: int, schedule: RetrySchedule,
           rng: random.Random) -> Decision:
    """The fate of a batch after an attempt that gave ``result``.

    ``meta.attempt`` counts the attempts made before this one (0 on a first attempt).
    """
    if result.ok:
        refused = result.rejected
        if refused is not None and refused.events >= meta.events:
            return Decision("dead_letter", meta.evolve(reason=REASON_REJECTED,
                                                       detail=refused.detail,
                                                       last_error=refused.detail))
        return Decision("delivered", meta, rejected=refused)
    error = result.error or f"HTTP {result.status_code}"
    part = result.pending
    body = part.body if part is not None else None
    if part is not None:
        meta = meta.evolve(events=part.events)
    if result.gone:
        return Decision("disabled", meta.evolve(reason=REASON_DISABLED, detail=error,
                                                last_error=error), disable="gone",
                        body=body, rejected=result.rejected)
    attempt = meta.attempt + 1
    first = meta.first_attempt_ms or now_ms
    if schedule.exhausted(first, now_ms):
        return Decision("dead_letter",
                        meta.evolve(attempt=attempt, first_attempt_ms=first, last_error=error,
                                    reason=REASON_EXHAUSTED, detail=error),
                        disable="failing", body=body, rejected=result.rejected)
    due = schedule.due_ms(now_ms, attempt, rng, result.retry_after_seconds)
    return Decision("retry",
                    meta.evolve(attempt=attempt, first_attempt_ms=first, due_ms=due,
                                last_error=error),
                    tier=schedule.tier(attempt), body=body, rejected=result.rejected)


def circuit_open(status: DestinationStatus | None, now: datetime, grace: timedelta) -> bool:
    """True while a destination's new batches must wait in Kafka.

    Open while the destination is ``failing``: its failed batch is in a retry
    tier, and the retry agent publishes ``ok`` (or ``disabled``) when it is
    attempted again. Should that status never come (a lost retry record), the
    circuit half-opens ``grace`` after the announced next attempt, so the next
    batch probes the destination instead of waiting forever.
    """
    if status is None or status.state != "failing":
        return False
    if status.next_attempt_at is None:
        return status.updated_at + grace > now
    return status.next_attempt_at + grace > now


def next_status(previous: DestinationStatus | None, decision: Decision,
                result: DeliveryResult | None, now: datetime) -> DestinationStatus:
    """A destination's status after ``decision`` (``result`` is None when nothing was sent)."""
    meta = decision.meta
    failures = previous.consecutive_failures if previous is not None else 0
    if decision.kind == "delivered" or (decision.kind == "dead_letter" and result is not None
                                        and decision.disable is None):
        # A receiver that refuses events for good answered: it is up, not failing.
        state, failures = "ok", 0
    elif decision.kind == "retry":
        state, failures = "failing", failures + 1
    else:
        state, failures = "disabled", failures + (0 if result is None else 1)
    sent = result is not None
    return DestinationStatus(
        destination_id=meta.destination_id,
        workspace_id=meta.workspace_id,
        state=state,
        last_delivery_at=now if sent else (previous.last_delivery_at if previous else None),
        last_delivery_ok=result.ok and decision.kind == "delivered" if result is not None else (
            previous.last_delivery_ok if previous else None),
        last_status_code=result.status_code if result is not None else (
            previous.last_status_code if previous else None),
        last_error=(result.error if result is not None else meta.detail) or None,
        consecutive_failures=failures,
        next_attempt_at=ms_to_datetime(meta.due_ms) if decision.kind == "retry" else None,
        updated_at=now,
    )


def attempt_record(decision: Decision, result: DeliveryResult | None,
                   now: datetime) -> DeliveryAttempt:
    """The ``audit.delivery-attempts`` record of an attempt (or of a refusal, result None)."""
    meta = decision.meta
    attempt = meta.attempt if decision.kind in ("retry", "dead_letter") else meta.attempt + 1
    if result is None:
        attempt = meta.attempt  # nothing was sent: no attempt is counted
    return DeliveryAttempt(
        destination_id=meta.destination_id,
        workspace_id=meta.workspace_id,
        batch_id=meta.batch_id,
        attempt=attempt,
        events=meta.events,
        at=now,
        outcome="dead_letter" if decision.kind == "dead_letter" else decision.kind,
        status_code=result.status_code if result is not None else None,
        latency_ms=result.latency_ms if result is not None else 0,
        error=(result.error if result is not None else meta.detail) or None,
        tier=decision.tier,
        next_attempt_at=ms_to_datetime(meta.due_ms) if decision.kind == "retry" else None,
    )
