"""The record of a destination on the compacted ``audit.destinations`` topic.

Key: the destination id. Value: this model as JSON, or a tombstone (no value)
when the destination is deleted. The management API publishes it; the router
and delivery agents materialise it. Secrets stay encrypted (``*_encrypted``):
only a process holding ``AUDITRELAY_SECRET_KEY`` can read them.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class DestinationConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    workspace_id: str
    name: str
    url: str
    enabled: bool
    disabled_reason: str | None = None
    #: Globs over event types (``pro.atmos.billing.*``); empty means every type.
    event_types: tuple[str, ...] = ()
    #: Whether the workspace's plan includes forwarding; false means skip it.
    forwarding: bool = True
    headers_encrypted: str | None = None
    secret_encrypted: str
    previous_secret_encrypted: str | None = None
    previous_secret_expires_at: datetime | None = None
    #: Increases with every change; a consumer keeps the highest it saw.
    version: int = Field(ge=1)
    updated_at: datetime
