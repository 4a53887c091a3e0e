"""``auditrelay destinations resync``: make Kafka agree with the database again.

The database is the source of truth. Every destination's config record on
``audit.destinations`` must be its latest version, every deleted one must be
a tombstone there, and ``audit.dest.{id}`` must exist exactly for the
destinations in the database. Repairs go through the outbox, like any change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka.admin import AdminClient
from sqlalchemy import select

from auditrelay.api.service import Service
from auditrelay.kafka.admin import read_compacted
from auditrelay.schemas.destinations import DestinationConfig
from auditrelay.schemas.errors import BrokerUnavailableError
from auditrelay.schemas.topics import destination_topic_spec
from auditrelay.store import outbox
from auditrelay.store.db import Destination, Workspace
from auditrelay.store.engine import Store


@dataclass
class ResyncReport:
    republished: list[str] = field(default_factory=list)
    tombstoned: list[str] = field(default_factory=list)
    topics_created: list[str] = field(default_factory=list)
    topics_deleted: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return ([f"republished {d}" for d in self.republished]
                + [f"tombstoned  {d}" for d in self.tombstoned]
                + [f"created     {t}" for t in self.topics_created]
                + [f"deleted     {t}" for t in self.topics_deleted]
                or ["in sync"])


def resync(service: Service, store: Store, admin: AdminClient,
           publisher: outbox.OutboxPublisher) -> ResyncReport:
    settings = service.settings
    names = settings.topics
    table = read_compacted(settings.kafka_bootstrap, names.destinations)
    try:
        existing = {t for t in admin.list_topics(timeout=30).topics
                    if t.startswith(names.destination_prefix)}
    except Exception as exc:
        raise BrokerUnavailableError(f"cannot list topics: {exc}") from exc
    report = ResyncReport()
    with store.transaction() as session:
        rows = session.execute(select(Destination, Workspace).join(
            Workspace, Workspace.id == Destination.workspace_id)).all()
        wanted_topics = set()
        for dest, workspace in rows:
            wanted_topics.add(names.destination(dest.id))
            if _stale(table.get(dest.id), dest, service, workspace):
                service.publish_config(session, workspace, dest)
                report.republished.append(dest.id)
            if names.destination(dest.id) not in existing:
                outbox.enqueue_topic(session, outbox.CREATE_TOPIC,
                                     destination_topic_spec(names, dest.id))
                report.topics_created.append(names.destination(dest.id))
        known = {dest.id for dest, _ in rows}
        for key, value in sorted(table.items()):
            if value is not None and key not in known:
                outbox.enqueue_record(session, names.destinations, key.encode(), None)
                report.tombstoned.append(key)
        for topic in sorted(existing - wanted_topics):
            orphan = topic.removeprefix(names.destination_prefix)
            outbox.enqueue_topic(session, outbox.DELETE_TOPIC,
                                 destination_topic_spec(names, orphan))
            report.topics_deleted.append(topic)
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
