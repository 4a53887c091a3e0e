"""``auditrelay destinations resync``: make Kafka agree with the database again.

The database is the source of truth. Every destination's config record on
``audit.destinations`` must be its latest version and every deleted one must be
a tombstone there. Repairs go through the outbox, like any change. Destinations
have no topics of their own (their batches share the keyed ``audit.deliveries``),
so there are none to repair; the publisher still runs entries that old releases
left in the outbox, topic creations and deletions included.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select

from auditrelay.api.service import Service
from auditrelay.kafka.admin import read_compacted
from auditrelay.schemas.destinations import DestinationConfig
from auditrelay.store import outbox
from auditrelay.store.db import Destination, Workspace
from auditrelay.store.engine import Store


@dataclass
class ResyncReport:
    republished: list[str] = field(default_factory=list)
    tombstoned: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return ([f"republished {d}" for d in self.republished]
                + [f"tombstoned  {d}" for d in self.tombstoned]
                or ["in sync"])


def resync(service: Service, store: Store, publisher: outbox.OutboxPublisher) -> ResyncReport:
    settings = service.settings
    names = settings.topics
    table = read_compacted(settings.kafka_bootstrap, names.destinations)
    report = ResyncReport()
    with store.transaction() as session:
        rows = session.execute(select(Destination, Workspace).join(
            Workspace, Workspace.id == Destination.workspace_id)).all()
        for dest, workspace in rows:
            if _stale(table.get(dest.id), dest, service, workspace):
                service.publish_config(session, workspace, dest)
                report.republished.append(dest.id)
        known = {dest.id for dest, _ in rows}
        for key, value in sorted(table.items()):
            if value is not None and key not in known:
                outbox.enqueue_record(session, names.destinations, key.encode(), None)
                report.tombstoned.append(key)
    # The repairs are committed to the outbox; publish them now unless another
    # process (a running API or worker) holds the lease and will do it.
    if publisher.acquire():
        try:
            while publisher.publish_pending():
                pass
        finally:
            publisher.release()
    return report


def _stale(current: bytes | None, dest: Destination, service: Service,
           workspace: Workspace) -> bool:
    if current is None:
        return True
    try:
        published = DestinationConfig.model_validate_json(current)
    except ValueError:
        return True
    return published != service.config_of(workspace, dest)
