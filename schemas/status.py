"""Delivery status records: one per attempt, and the latest state per destination.

``audit.delivery-attempts`` (key destination id): ``DeliveryAttempt`` as JSON.
``audit.delivery-status`` (compacted, key destination id): ``DestinationStatus``.
Dashboards, the API and ``auditrelay status`` read these.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

Outcome = Literal["delivered", "retry", "dead_letter", "disabled"]
State = Literal["ok", "failing", "disabled"]


class DeliveryAttempt(BaseModel):
    model_config = ConfigDict(frozen=True)

    destination_id: str
    workspace_id: str
    batch_id: str
    attempt: int
    events: int
    at: datetime
    outcome: Outcome
    status_code: int | None = None
    latency_ms: int
    error: str | None = None
    #: Retry tier the batch went to, and when it is due, for outcome "retry".
    tier: str | None = None
    next_attempt_at: datetime | None = None


class DestinationStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    destination_id: str
    workspace_id: str
    state: State
    last_delivery_at: datetime | None = None
    last_delivery_ok: bool | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    #: Failures in a row since the last 2xx.
    consecutive_failures: int = 0
    #: While failing: when the next probe of the destination is due.
    next_attempt_at: datetime | None = None
    updated_at: datetime
