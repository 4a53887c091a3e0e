"""Changes made to destinations, by the API and by the worker, written once.

The database is the source of truth for destinations, so a change updates the
row and, in the same transaction, enqueues what it causes: the new config on
``audit.destinations`` (``enqueue_config``) and the self-audit event on
``audit.events`` (``enqueue_audit``). ``publish_change`` is the usual whole:
version bump, config, event. The API's service makes every change through
these functions; the worker makes one, ``disable_destination`` (410 Gone:
``webhook.disabled``; 72 hours of failures: ``webhook.auto_disabled``). Each
process's ``OutboxPublisher`` publishes what they enqueue. ``republish_after_upgrade``
is the upgrade step's: once revision 0005 encrypted the URLs, every destination's
config goes out again, so that the compacted topic's latest records hold no plaintext URL.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Final

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from auditrelay.schemas.builder import EventBuilder
from auditrelay.schemas.destinations import DestinationConfig
from auditrelay.schemas.settings import Settings
from auditrelay.store import outbox
from auditrelay.store.db import Destination, Workspace
from auditrelay.store.engine import Store
from auditrelay.store.migrations import AfterUpgrade, Upgrade, head_revision

__all__ = [
    "FAILING",
    "GONE",
    "SYSTEM_ACTOR",
    "bump_version",
    "config_of",
    "disable_destination",
    "enqueue_audit",
    "enqueue_config",
    "event_builder",
    "forwarding",
    "publish_change",
    "republish_after_upgrade",
]

log = logging.getLogger(__name__)

#: Reasons a worker disables a destination with.
GONE: Final = "gone"
FAILING: Final = "failing"
_ACTIONS: Final = {GONE: "disabled", FAILING: "auto_disabled"}
SYSTEM_ACTOR: Final = {"type": "system", "id": "auditrelay"}
#: The revision that encrypted destination URLs (audit.destinations held them in clear).
URLS_ENCRYPTED: Final = "0005"


def disable_destination(store: Store, settings: Settings, dest_id: str, reason: str,
                        *, detail: str | None = None, now: datetime | None = None) -> bool:
    """Disable ``dest_id`` with ``reason`` (``gone`` or ``failing``); True if it changed.

    A destination already disabled, or deleted, is left alone: two workers
    reaching the same verdict emit one event, not two.
    """
    if reason not in _ACTIONS:
        raise ValueError(f"unknown disable reason {reason!r}; known: {', '.join(_ACTIONS)}")
    with store.transaction() as session:
        dest = session.get(Destination, dest_id)
        if dest is None or not dest.enabled:
            return False
        dest.enabled = False
        dest.disabled_reason = reason
        metadata: dict[str, str | int] = {"reason": reason}
        if detail:
            metadata["detail"] = detail[:500]
        publish_change(session, settings, session.get(Workspace, dest.workspace_id), dest,
                       _ACTIONS[reason], SYSTEM_ACTOR, metadata=metadata, now=now)
    log.warning("destination %s disabled (%s)", dest_id, reason)
    return True


def publish_change(session: Session, settings: Settings, workspace: Workspace | None,
                   dest: Destination, action: str, actor: Mapping[str, str], *,
                   metadata: Mapping[str, str | int] | None = None, now: datetime | None = None,
                   builder: EventBuilder | None = None) -> None:
    """A change made to the row ``dest``: its version bumped, its new config and the
    ``webhook.{action}`` event by ``actor`` enqueued in ``session``'s transaction."""
    moment = now or datetime.now(UTC)
    bump_version(dest, moment)
    enqueue_config(session, settings, workspace, dest)
    enqueue_audit(session, settings, dest, action, actor, metadata=metadata, now=moment,
                  builder=builder)


def republish_after_upgrade(settings: Settings) -> AfterUpgrade:
    """What ``auditrelay db upgrade`` runs in the upgrade's transaction: when it encrypted
    the destinations' URLs, each destination's config, version bumped, through the outbox.

    The bump makes consumers take the new record over the plaintext one they hold;
    compaction then drops the plaintext records from ``audit.destinations``. Only an
    upgrade to the head revision does it: the ORM describes that schema.
    """
    def after(connection: Connection, done: Upgrade) -> None:
        if not done.crossed(URLS_ENCRYPTED) or done.after != head_revision():
            return
        now = datetime.now(UTC)
        # Joins the upgrade's transaction; commits nothing of its own.
        with Session(bind=connection) as session:
            for dest in session.scalars(select(Destination).order_by(Destination.id)):
                bump_version(dest, now)
                enqueue_config(session, settings, session.get(Workspace, dest.workspace_id),
                               dest)
            session.flush()
    return after


def bump_version(dest: Destination, now: datetime) -> None:
    dest.version += 1
    # Strictly later than the last change: consumers order configs by it.
    dest.updated_at = max(now, dest.updated_at + timedelta(microseconds=1))


def forwarding(settings: Settings, workspace: Workspace | None) -> bool:
    """Whether ``workspace``'s plan includes forwarding (an unknown plan does not)."""
    plan = settings.plans.get(workspace.plan) if workspace is not None else None
    return bool(plan and plan.forwarding)


def enqueue_config(session: Session, settings: Settings, workspace: Workspace | None,
                   dest: Destination) -> None:
    """``dest``'s config record on audit.destinations, through the outbox."""
    config = config_of(dest, forwarding=forwarding(settings, workspace),
                       workspace_name=workspace.name if workspace is not None else "")
    outbox.enqueue_record(session, settings.topics.destinations, dest.id.encode(),
                          config.model_dump_json().encode())


def enqueue_audit(session: Session, settings: Settings, dest: Destination, action: str,
                  actor: Mapping[str, str], *, metadata: Mapping[str, str | int] | None = None,
                  now: datetime | None = None, builder: EventBuilder | None = None) -> None:
    """The self-audit event ``webhook.{action}`` of ``dest``, through the outbox.

    Its metadata names the destination and its version, then ``metadata``.
    """
    event = (builder or event_builder(settings)).build(
        dest.workspace_id, "webhook", action, actor=dict(actor),
        target={"type": "destination", "id": dest.id},
        metadata={"destination": dest.name, "version": dest.version, **(metadata or {})},
        time=now or datetime.now(UTC))
    outbox.enqueue_event(session, settings.topics.events, event)


def event_builder(settings: Settings) -> EventBuilder:
    """The builder of self-audit events, as ``settings`` name and place them."""
    return EventBuilder(type_prefix=settings.event_type_prefix,
                        source_base_url=settings.source_base_url)


def config_of(dest: Destination, *, forwarding: bool, workspace_name: str = "",
              ) -> DestinationConfig:
    """The record of the database row ``dest`` on audit.destinations.

    ``forwarding`` is whether the workspace's plan includes forwarding; the API
    and the worker (when it disables a destination) publish through this one
    function, so the two never disagree on what a config holds.
    """
    return DestinationConfig(
        id=dest.id, workspace_id=dest.workspace_id, workspace_name=workspace_name,
        name=dest.name, kind=dest.kind,
        options=dict(dest.options or {}), credentials_encrypted=dest.credentials_encrypted,
        url_encrypted=dest.url_encrypted, url_hint=dest.url_hint, enabled=dest.enabled,
        disabled_reason=dest.disabled_reason,
        event_types=tuple(dest.event_types), forwarding=forwarding,
        headers_encrypted=dest.headers_encrypted, secret_encrypted=dest.secret_encrypted,
        previous_secret_encrypted=dest.previous_secret_encrypted,
        previous_secret_expires_at=dest.previous_secret_expires_at, version=dest.version,
        updated_at=dest.updated_at)
