"""The events API: a workspace's archived audit log, filtered, with cursor pagination.

``GET /v1/workspaces/{ws}/events`` returns the newest events first (time, then
id, both descending). The cursor is opaque to clients: base64url of the time
and id of the last row of a page; the next page continues strictly after that
row (keyset pagination), so rows inserted while a client pages through are
never returned twice and never shift the pages.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from auditrelay.api.models import EVENT_TYPE_GLOB, EventPage
from auditrelay.schemas.errors import InvalidCursorError, InvalidInputError
from auditrelay.schemas.ids import REFERENCE_ID_RE
from auditrelay.store.db import ArchivedEvent

MAX_LIMIT = 500
DEFAULT_LIMIT = 100
#: Ten times the longest cursor this API returns (a time and an event id, ~100 characters).
MAX_CURSOR_LENGTH = 1024


@dataclass(frozen=True)
class Cursor:
    """The position after which the next page starts."""

    time: datetime
    id: str

    def encode(self) -> str:
        text = json.dumps([self.time.isoformat(), self.id], separators=(",", ":"))
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        """The position of a cursor this API returned; anything else is refused (400).

        ``InvalidCursorError`` for every form of bad cursor (too long, not base64url,
        not JSON, not ``[time, id]``, a time without offset or out of range, an id
        that is not a reference id), so that clients see one answer, never a 500.
        """
        if len(token) > MAX_CURSOR_LENGTH:
            raise InvalidCursorError(f"cursor is longer than {MAX_CURSOR_LENGTH} characters: "
                                     "not one this API returned", field="cursor")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            time_text, event_id = json.loads(raw)
            moment = datetime.fromisoformat(time_text)
            # An offset can push a time valid as written out of datetime's range in UTC
            # (0001-01-01T00:00:00+14:00): OverflowError, which was a 500.
            utc = moment.astimezone(UTC) if moment.tzinfo is not None else None
        except (binascii.Error, ValueError, TypeError, OverflowError, RecursionError) as exc:
            raise InvalidCursorError("cursor is not one this API returned",
                                     field="cursor") from exc
        # The id goes into a query: no NUL (PostgreSQL refuses it) nor other control bytes.
        if utc is None or not isinstance(event_id, str) or not REFERENCE_ID_RE.fullmatch(event_id):
            raise InvalidCursorError("cursor is not one this API returned", field="cursor")
        return cls(utc, event_id)


@dataclass(frozen=True)
class EventQuery:
    """The filters of one request; every field is optional."""

    type: str | None = None
    actor: str | None = None
    target: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


def glob_to_like(glob: str) -> str:
    """A type glob (``*`` any run of characters) as a LIKE pattern escaped with ``\\``."""
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def as_utc(value: datetime | None, field: str) -> datetime | None:
    """An RFC 3339 query time in UTC; a time without an offset is refused."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise InvalidInputError(f"{field} needs a time zone offset, e.g. 2026-11-25T10:30:00Z",
                                field=field)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise InvalidInputError(f"{field} is out of range", field=field) from exc


def _check(query: EventQuery) -> None:
    if query.type is not None and not EVENT_TYPE_GLOB.fullmatch(query.type):
        raise InvalidInputError(f"type {query.type!r} is not an event-type glob such as "
                                "pro.atmos.billing.*", field="type")
    for name, value in (("actor", query.actor), ("target", query.target)):
        if value is not None and REFERENCE_ID_RE.fullmatch(value) is None:
            raise InvalidInputError(f"{name} must be 1-256 printable characters", field=name)
    if not 1 <= query.limit <= MAX_LIMIT:
        raise InvalidInputError(f"limit must be 1 to {MAX_LIMIT}", field="limit")


def build_select(workspace_id: str, query: EventQuery) -> Select[ArchivedEvent]:
    """The SELECT of one page (one row more than the limit, to know if more follow)."""
    _check(query)
    row = ArchivedEvent
    statement = select(row).where(row.workspace_id == workspace_id)
    if query.type is not None:
        statement = statement.where(row.type.like(glob_to_like(query.type), escape="\\")
                                    if "*" in query.type else row.type == query.type)
    if query.actor is not None:
        statement = statement.where(row.actor_id == query.actor)
    if query.target is not None:
        statement = statement.where(row.target_id == query.target)
    since, until = as_utc(query.since, "since"), as_utc(query.until, "until")
    if since is not None:
        statement = statement.where(row.time >= since)
    if until is not None:
        statement = statement.where(row.time < until)
    if query.cursor is not None:
        after = Cursor.decode(query.cursor)
        statement = statement.where(or_(row.time < after.time,
                                        and_(row.time == after.time, row.id < after.id)))
    return statement.order_by(row.time.desc(), row.id.desc()).limit(query.limit + 1)


def list_events(session: Session, workspace_id: str, query: EventQuery) -> EventPage:
    """One page of the workspace's events and the cursor of the next (None at the end)."""
    rows = list(session.scalars(build_select(workspace_id, query)))
    more = len(rows) > query.limit
    rows = rows[:query.limit]
    items: list[dict[str, Any]] = [json.loads(r.raw) for r in rows]
    next_cursor = Cursor(rows[-1].time, rows[-1].id).encode() if more else None
    return EventPage(items=items, next_cursor=next_cursor)
