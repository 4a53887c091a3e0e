"""Archive: consumes audit.events, produces rows of the relational archive.

Every valid event becomes one row of ``archived_events`` (``auditrelay.store.db``),
written in bulk with ``INSERT ... ON CONFLICT DO NOTHING`` keyed by the event
id, so a redelivered or replayed event never adds a row. Malformed events are
skipped with a log line (the router dead-letters them).

The input is read in rounds (:mod:`auditrelay.kafka.rounds`, a consumer group of the
archive's own, so it sees every event whatever the router does) and handed to
the Faust agent ``archive``; a round's offsets are committed only after its
rows are (the transaction runs in a thread, not to block the event loop, and a
failing one is retried with backoff until it succeeds).

An event is valid for the archive exactly when the router accepts it
(:func:`auditrelay.agents.routing.check_record`); the row of a canonical event is read
with ``json.loads`` (a few microseconds), falling back to the full model only
for values written in another form.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import TYPE_CHECKING, Any, cast

import faust
from sqlalchemy import Engine, Insert

from auditrelay.agents.routing import check_record
from auditrelay.kafka.backoff import Backoff
from auditrelay.kafka.rounds import Round, hand_over_to, input_consumer, read_rounds, settle
from auditrelay.schemas.codec import parse_event
from auditrelay.schemas.envelope import AuditEvent
from auditrelay.schemas.errors import ConfigurationError, InvalidEventError
from auditrelay.schemas.settings import Settings
from auditrelay.store.db import ArchivedEvent
from auditrelay.store.engine import checked_engine

if TYPE_CHECKING:
    from auditrelay.tables.registry import SharedFollower

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


#: The head of an envelope as ``auditrelay.schemas.builder`` writes it, up to ``data.target``,
#: matched on the decoded text (the row keeps that text, and text groups need no decoding).
#: Strings with escapes do not match (``[^"\\]``); those take the JSON path.
_CANONICAL_HEAD = re.compile(
    r'\{"specversion":"1\.0","id":"(aud_[0-9A-Z]{26})","source":"([^"\\]*)",'
    r'"type":"([a-z0-9_.]+)","time":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z"'
    r'(?:,"subject":"([^"\\]*)")?,"datacontenttype":"application/json",'
    r'"workspaceid":"(ws_[a-z0-9]+)","data":\{"actor":\{"id":"([^"\\]*)","type":"([a-z_]+)"\},'
    r'"action":\{"category":"[a-z0-9_]+","action":"[a-z0-9_]+"\},'
    r'"target":(?:null|\{"type":"([a-z0-9_]+)","id":"([^"\\]*)"\}),', re.ASCII)


def quick_row(value: bytes) -> Row:
    """The archive row of a canonical event, read without the model.

    The common case is a pattern match of the envelope's head (about 1 µs, where
    ``json.loads`` of a 500-byte event takes 5-10); other layouts are read with
    ``json.loads``. Raises ``ValueError``, ``KeyError`` or ``TypeError`` on anything
    unexpected, for the caller to fall back to :func:`event_row` on the parsed event.
    """
    raw = value.decode()
    head = _CANONICAL_HEAD.match(raw)
    if head is not None:
        (event_id, source, event_type, when, subject, workspace, actor_id, actor_type,
         target_type, target_id) = head.groups()
        return {"id": event_id, "source": source, "workspace_id": workspace,
                "type": event_type, "time": datetime.fromisoformat(f"{when}+00:00"),
                "actor_id": actor_id, "actor_type": actor_type, "target_type": target_type,
                "target_id": target_id, "subject": subject, "raw": raw}
    return _json_row(value)


def _json_row(value: bytes) -> Row:
    doc = json.loads(value)
    data = doc["data"]
    actor = data["actor"]
    target = data.get("target")
    when = datetime.fromisoformat(doc["time"])
    if when.utcoffset() != timedelta(0):
        raise ValueError("time is not UTC")
    row = {
        "id": doc["id"], "source": doc["source"], "workspace_id": doc["workspaceid"],
        "type": doc["type"], "time": when, "actor_id": actor["id"], "actor_type": actor["type"],
        "target_type": None if target is None else target["type"],
        "target_id": None if target is None else target["id"],
        "subject": doc.get("subject"), "raw": value.decode("utf-8"),
    }
    if not all(type(row[name]) is str for name in _TEXT_COLUMNS):
        raise TypeError("a column is not a string")
    return row


_TEXT_COLUMNS = ("id", "source", "workspace_id", "type", "actor_id", "actor_type")


def record_row(key: bytes | None, value: bytes | None, headers: Any) -> Row:
    """The row of one ``audit.events`` record; ``InvalidEventError`` if it is malformed."""
    verdict = check_record(key, value, headers)
    if isinstance(verdict, str):
        raise InvalidEventError(verdict)
    value = cast(bytes, value)  # check_record refuses records without a value
    try:
        return quick_row(value)
    except (ValueError, KeyError, TypeError):
        return event_row(parse_event(value), value.decode("utf-8"))


def rows_from_records(records: Iterable[Any]) -> tuple[list[Row], int]:
    """Rows of the valid records (with ``key``, ``value``, ``headers``), and how many
    were skipped as malformed."""
    rows: list[Row] = []
    skipped = 0
    for record in records:
        try:
            rows.append(record_row(record.key, record.value, record.headers))
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
    """Insert ``rows`` in one transaction, ignoring ids already archived.

    The statement is compiled once per engine and run with the driver's own
    ``executemany``: SQLAlchemy's per-row parameter processing cost as much as
    the insert itself. ``time`` is bound the way ``auditrelay.store.db.UtcDateTime`` binds
    it (SQLite: naive UTC text; PostgreSQL: the aware datetime).
    """
    if not rows:
        return
    sql, order = _driver_sql(engine)
    if engine.dialect.name == "sqlite":
        rows = _with_sqlite_times(rows)
    params: list[Any] = list(rows)  # named parameters (PostgreSQL) as they are
    if order:  # positional ones (SQLite) as tuples in the statement's column order
        values = itemgetter(*order)
        params = [values(row) for row in rows]
    with engine.begin() as connection:
        connection.exec_driver_sql(sql, params)


def _with_sqlite_times(rows: Sequence[Row]) -> list[Row]:
    """``rows`` with ``time`` as SQLite text. At high rates many events of a round share
    their millisecond, so each distinct time is formatted once."""
    texts: dict[datetime, str] = {}
    out: list[Row] = []
    for row in rows:
        when = row["time"]
        text = texts.get(when)
        if text is None:
            text = texts[when] = _sqlite_time(when)
        out.append({**row, "time": text})
    return out


_compiled: weakref.WeakKeyDictionary[Engine, tuple[str, tuple[str, ...]]] = (
    weakref.WeakKeyDictionary())


def _driver_sql(engine: Engine) -> tuple[str, tuple[str, ...]]:
    """The insert in the driver's paramstyle, and the column order of positional styles."""
    found = _compiled.get(engine)
    if found is None:
        # Compiled without values, an insert names every column as a bind parameter;
        # every row has every column.
        compiled = insert_statement(engine.dialect.name).compile(dialect=engine.dialect)
        found = _compiled[engine] = (str(compiled), tuple(compiled.positiontup or ()))
    return found


def _sqlite_time(value: datetime) -> str:
    """A UTC datetime as SQLAlchemy's SQLite ``DATETIME`` stores it (naive, microseconds)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


class ArchiveWriter:
    """The archive's database, opened (its schema checked) on first use."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                self._engine = checked_engine(self._url)
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
    backoff = Backoff(first_backoff, max_backoff)
    while True:
        try:
            await asyncio.to_thread(write, rows)
            return failures
        except Exception as exc:  # an escaping error would ack, hence lose, the batch
            failures += 1
            log.warning("archive: writing %d rows failed (%s: %s); retrying in %.1f s",
                        len(rows), type(exc).__name__, exc, backoff.delay)
            await backoff.wait()


def register(app: faust.App, settings: Settings, destinations: SharedFollower) -> None:
    """Add the archive agent, and the reader that feeds it rounds, to ``app``.

    ``destinations`` (the app's destination registry) is not needed: every valid event
    is archived.
    """
    writer = ArchiveWriter(settings.database_url)
    writer.engine()  # now, not at the first write: a schema not at head stops the start
    rounds_channel: faust.ChannelT[Round] = app.channel()

    @app.agent(rounds_channel, name="archive", concurrency=1)
    async def archive(rounds: faust.StreamT[Round]) -> None:
        async for batch in rounds:
            await settle(batch, archive_round(writer, batch.records))

    async def read_events() -> None:
        await read_rounds(input_consumer(settings, settings.topics.archive_group,
                                         "auditrelay-archive"),
                          settings.topics.events, hand_over_to(rounds_channel, "archive"),
                          name="archive", max_records=settings.archive_batch_max_events,
                          window=settings.archive_batch_seconds)

    app.task(read_events)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode's stub wants a sync def
    async def close_archive(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        writer.close()


async def archive_round(writer: ArchiveWriter, records: Sequence[Any]) -> None:
    """Write the rows of one round; returns once they are committed."""
    rows, _ = rows_from_records(records)
    if rows:
        await commit_until_done(writer.write, rows)
