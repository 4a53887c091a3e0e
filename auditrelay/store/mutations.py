"""Changes the worker makes to destinations: disabling one (410 Gone, or retries exhausted).

The database is the source of truth for destinations, so the worker changes
the row, and in the same transaction enqueues what the change causes, as the
API does: the new config on ``audit.destinations`` and the self-audit event
(``webhook.disabled`` for 410, ``webhook.auto_disabled`` after 72 hours of
failures) on ``audit.events``. The worker's ``OutboxPublisher`` publishes them.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Final

from auditrelay.schemas.builder import EventBuilder
from auditrelay.schemas.destinations import DestinationConfig
from auditrelay.schemas.settings import Settings
from auditrelay.store import outbox
from auditrelay.store.db import Destination, Workspace
from auditrelay.store.engine import Store

__all__ = ["GONE", "SYSTEM_ACTOR", "config_of", "disable_destination"]

log = logging.getLogger(__name__)

#: Reasons a worker disables a destination with.
GONE: Final = "gone"
FAILING: Final = "failing"
_ACTIONS: Final = {GONE: "disabled", FAILING: "auto_disabled"}
SYSTEM_ACTOR: Final = {"type": "system", "id": "auditrelay"}


def disable_destination(store: Store, settings: Settings, dest_id: str, reason: str,
                        *, detail: str | None = None, now: datetime | None = None) -> bool:
    """Disable ``dest_id`` with ``reason`` (``gone`` or ``failing``); True if it changed.

    A destination already disabled, or deleted, is left alone: two workers
    reaching the same verdict emit one event, not two.
    """
    if reason not in _ACTIONS:
        raise ValueError(f"unknown disable reason {reason!r}; known: {', '.join(_ACTIONS)}")
    moment = now or datetime.now(UTC)
    with store.transaction() as session:
        dest = session.get(Destination, dest_id)
        if dest is None or not dest.enabled:
            return False
        workspace = session.get(Workspace, dest.workspace_id)
        plan = settings.plans.get(workspace.plan) if workspace is not None else None
        dest.enabled = False
        dest.disabled_reason = reason
        dest.version += 1
        # Strictly later than the last change: consumers order configs by it.
        dest.updated_at = max(moment, dest.updated_at + timedelta(microseconds=1))
        config = config_of(dest, forwarding=bool(plan and plan.forwarding))
        outbox.enqueue_record(session, settings.topics.destinations, dest.id.encode(),
                              config.model_dump_json().encode())
        metadata: dict[str, str | int] = {"destination": dest.name, "version": dest.version,
                                          "reason": reason}
        if detail:
            metadata["detail"] = detail[:500]
        event = EventBuilder(type_prefix=settings.event_type_prefix,
                             source_base_url=settings.source_base_url).build(
            dest.workspace_id, "webhook", _ACTIONS[reason], actor=SYSTEM_ACTOR,
            target={"type": "destination", "id": dest.id}, metadata=metadata, time=moment)
        outbox.enqueue_event(session, settings.topics.events, event)
    log.warning("destination %s disabled (%s)", dest_id, reason)
    return True


def config_of(dest: Destination, *, forwarding: bool) -> DestinationConfig:
    """The record of the database row ``dest`` on audit.destinations.

    ``forwarding`` is whether the workspace's plan includes forwarding; the API
    and the worker (when it disables a destination) publish through this one
    function, so the two never disagree on what a config holds.
    """
    return DestinationConfig(
        id=dest.id, workspace_id=dest.workspace_id, name=dest.name, url=dest.url,
        enabled=dest.enabled, disabled_reason=dest.disabled_reason,
        event_types=tuple(dest.event_types), forwarding=forwarding,
        headers_encrypted=dest.headers_encrypted, secret_encrypted=dest.secret_encrypted,
        previous_secret_encrypted=dest.previous_secret_encrypted,
        previous_secret_expires_at=dest.previous_secret_expires_at, version=dest.version,
        updated_at=dest.updated_at)
