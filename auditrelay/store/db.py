"""The relational schema: workspaces, destinations, the Kafka outbox and the event archive.

SQLAlchemy 2 typed models; Alembic migrations under ``schemas/migrations`` create
them (``migrate``). SQLite is the embedded default, PostgreSQL the production
store. Secrets (destination URLs, signing secrets, custom header values) are stored
only as ciphertext; workspace tokens and page sessions only as SHA-256 hashes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    insert,
    inspect,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: dict[Any, Any] = {datetime: UtcDateTime()}  # noqa: RUF012


def insert_new(session: Session, row: Base) -> None:
    """Insert the row of ``row``, a new object, with one Core statement now.

    For hot paths: the unit of work costs a destination's creation more CPU than the
    rest of it together. ``row`` stays out of the session: it can be read, later changes
    to it are not saved, and a column it was not given takes its default.
    """
    mapper = inspect(type(row))
    given = row.__dict__
    values = {prop.columns[0].key: given[prop.key] for prop in mapper.column_attrs
              if prop.key in given}
    session.execute(insert(cast(Table, mapper.local_table)), values)


class Workspace(Base):
    __tablename__ = "workspaces"

    id: Mapped[str] = mapped_column(String(43), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    plan: Mapped[str] = mapped_column(String(50))
    #: An Enterprise workspace's extended retention; None means the plan's.
    retention_days: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkspaceToken(Base):
    """One of a workspace's API tokens: several at once, so that one is rotated
    without downtime (create the new one, switch, revoke the old)."""

    __tablename__ = "workspace_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    #: The token's first characters, to tell tokens apart; None for tokens older than
    #: this table (only their hash was ever stored).
    prefix: Mapped[str | None] = mapped_column(String(16), default=None)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)


class PageSession(Base):
    """A signed-in session of the settings page, opened with one workspace token.

    The browser holds a random id; the row holds its hash. Revoking the token
    deletes its sessions (ON DELETE CASCADE).
    """

    __tablename__ = "page_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    token_id: Mapped[str] = mapped_column(
        ForeignKey("workspace_tokens.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class Destination(Base):
    __tablename__ = "destinations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    #: The destination kind (``auditrelay.wire.kinds``): body, auth, limits, answers.
    kind: Mapped[str] = mapped_column(String(30), default="webhook", server_default="webhook")
    #: The kind's options (non-secret), as validated by the kind.
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    #: The kind's credentials, one JSON object encrypted like the secrets.
    credentials_encrypted: Mapped[str | None] = mapped_column(Text, default=None)
    #: The URL, encrypted: for some receivers (Slack, Sumo Logic) it is the credential.
    url_encrypted: Mapped[str] = mapped_column(Text)
    #: What reads show of the URL (``https://hooks.slack.com/…``, schemas.destinations).
    url_hint: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(50), default=None)
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: JSON object of custom headers, encrypted as one value.
    headers_encrypted: Mapped[str | None] = mapped_column(Text, default=None)
    secret_encrypted: Mapped[str] = mapped_column(Text)
    #: After a rotation the old secret keeps signing until this moment.
    previous_secret_encrypted: Mapped[str | None] = mapped_column(Text, default=None)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    #: Incremented on every change; consumers of audit.destinations keep the highest.
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutboxEntry(Base):
    """A Kafka side effect committed with the change that caused it.

    The publisher performs entries in id order and deletes each once the broker
    confirmed it, so a change accepted while Kafka is down is published later.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    #: ``record`` (produce), ``create_topic`` or ``delete_topic``.
    kind: Mapped[str] = mapped_column(String(20))
    topic: Mapped[str] = mapped_column(String(255))
    key: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    #: None produces a tombstone.
    value: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    headers: Mapped[list[list[str]] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutboxLease(Base):
    """Which process publishes the outbox: one at a time, so entries keep their order.

    A single row (id 1). A publisher takes it over when it is free or expired,
    with one conditional UPDATE, which is atomic on SQLite and PostgreSQL alike.
    """

    __tablename__ = "outbox_lease"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    holder: Mapped[str] = mapped_column(String(100))
    expires_at: Mapped[datetime] = mapped_column()


class ArchivedEvent(Base):
    """One audit event of the relational archive (docs/archive.md).

    The primary key is the event id alone: ids are ULIDs (80 random bits per
    millisecond) minted by the producers, so ``id`` is as unique as the contract's
    ``source`` + ``id`` and keeps the key narrow; ``source`` is kept as a column.
    Rows are inserted with ON CONFLICT DO NOTHING, so redelivery adds nothing.
    """

    __tablename__ = "archived_events"
    __table_args__ = (
        Index("ix_archived_events_workspace_time", "workspace_id", "time"),
        Index("ix_archived_events_workspace_type_time", "workspace_id", "type", "time"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    source: Mapped[str] = mapped_column(String(2048))
    workspace_id: Mapped[str] = mapped_column(String(43))
    type: Mapped[str] = mapped_column(String(256))
    time: Mapped[datetime] = mapped_column()
    actor_id: Mapped[str] = mapped_column(String(256))
    actor_type: Mapped[str] = mapped_column(String(20))
    target_type: Mapped[str | None] = mapped_column(String(256), default=None)
    target_id: Mapped[str | None] = mapped_column(String(256), default=None)
    subject: Mapped[str | None] = mapped_column(String(256), default=None)
    #: The envelope exactly as produced (canonical JSON, UTF-8).
    raw: Mapped[str] = mapped_column(Text)
