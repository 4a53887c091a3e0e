"""Archive: consumes audit.events, produces rows of the relational archive.

Every valid event becomes one row of ``archived_events`` (``schemas.db``),
written in bulk with ``INSERT ... ON CONFLICT DO NOTHING`` keyed by the event
id, so a redelivered or replayed event never adds a row. Malformed events are
skipped with a log line (the router dead-letters them).

Faust acks a batch of ``take_events`` when the loop asks for the next one, so
the loop commits the batch's transaction first (in a thread, not to block the
event loop) and retries a failing commit with backoff until it succeeds: an
exception escaping an agent would ack, and so lose, the batch.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import faust
from sqlalchemy import Engine, Insert

from agents.store import make_engine
from schemas.codec import parse_event
from schemas.db import ArchivedEvent
from schemas.envelope import AuditEvent
from schemas.errors import ConfigurationError, InvalidEventError
from schemas.settings import Settings

log = logging.getLogger(__name__)

Row = dict[str, Any]

_FIRST_BACKOFF_SECONDS = 0.5
_MAX_BACKOFF_SECONDS = 30.0


def event_row(event: AuditEvent, raw: str) -> Row:
    """The archive row of one parsed event; ``raw`` is its envelope as produced."""
    target = event.data.target
    return {
        "id": event.id,
        "source": event.source,
        "workspace_id": event.workspaceid,
        "type": event.type,
        "time": event.time,
        "actor_id": event.data.actor.id,
        "actor_type": event.data.actor.type,
        "target_type": None if target is None else target.type,
        "target_id": None if target is None else target.id,
        "subject": event.subject,
        "raw": raw,
    }


def rows_from_values(values: Iterable[bytes | None]) -> tuple[list[Row], int]:
    """Rows of the valid values, and how many were skipped as malformed."""
    rows: list[Row] = []
    skipped = 0
    for value in values:
        try:
            if value is None:
                raise InvalidEventError("empty record (no value)")
            rows.append(event_row(parse_event(value), value.decode("utf-8")))
        except InvalidEventError as exc:
            skipped += 1
            log.warning("archive: skipping a malformed event: %s", exc)
    return rows, skipped


def insert_statement(dialect_name: str) -> Insert:
    """``INSERT ... ON CONFLICT (id) DO NOTHING`` for SQLite or PostgreSQL."""
    if dialect_name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(ArchivedEvent).on_conflict_do_nothing(index_elements=["id"])
    if dialect_name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(ArchivedEvent).on_conflict_do_nothing(index_elements=["id"])
    raise ConfigurationError(f"the archive supports SQLite and PostgreSQL, not {dialect_name}")


def insert_rows(engine: Engine, rows: Sequence[Row]) -> None:
    """Insert ``rows`` in one transaction, ignoring ids already archived."""
    if not rows:
        return
    statement = insert_statement(engine.dialect.name)
    with engine.begin() as connection:
        connection.execute(statement, list(rows))


class ArchiveWriter:
    """The archive's database, opened (and migrated) on the first write, in a thread."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                self._engine = make_engine(self._url)
            return self._engine

    def write(self, rows: Sequence[Row]) -> None:
        insert_rows(self.engine(), rows)

    def close(self) -> None:
        """Close pooled connections; a later write opens new ones."""
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()


async def commit_until_done(write: Callable[[Sequence[Row]], None], rows: Sequence[Row], *,
                            first_backoff: float = _FIRST_BACKOFF_SECONDS,
                            max_backoff: float = _MAX_BACKOFF_SECONDS) -> int:
    """Run ``write(rows)`` in a thread until it succeeds; returns the failed attempts.

    Only cancellation (worker shutdown) ends it early; the batch is then not
    acked and is delivered again after the restart.
    """
    failures = 0
    delay = first_backoff
    while True:
        try:
            await asyncio.to_thread(write, rows)
            return failures
        except Exception as exc:  # an escaping error would ack, hence lose, the batch
            failures += 1
            log.warning("archive: writing %d rows failed (%s: %s); retrying in %.1f s",
                        len(rows), type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
            delay = min(max_backoff, delay * 2)


def register(app: faust.App, settings: Settings) -> None:
    topic = app.topic(settings.topics.events, key_serializer="raw", value_serializer="raw")
    writer = ArchiveWriter(settings.database_url)

    @app.agent(topic, name="archive")
    async def archive(stream: faust.StreamT[bytes]) -> None:
        batches = cast(faust.Stream[bytes], stream).take_events(settings.archive_batch_max_events,
                                     within=settings.archive_batch_seconds)
        async for events in batches:
            rows, _ = rows_from_values(event.value for event in events)
            if rows:
                # Committed before the loop asks for the next batch, which acks this one.
                await commit_until_done(writer.write, rows)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode's stub wants a sync def
    async def close_archive(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        writer.close()
