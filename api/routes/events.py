"""``/v1/workspaces/{ws}/events``: a workspace's archived audit log (docs/archive.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from auditrelay.api import events
from auditrelay.api.deps import Readable, Tx
from auditrelay.api.models import EventPage

router = APIRouter()


@router.get("/v1/workspaces/{ws}/events", response_model=EventPage)
def list_events(
    ws: Readable, session: Tx,
    event_type: Annotated[str | None, Query(alias="type", max_length=256,
                                            description="type or glob: pro.atmos.billing.*")
                          ] = None,
    actor: Annotated[str | None, Query(max_length=256, description="actor id")] = None,
    target: Annotated[str | None, Query(max_length=256, description="target id")] = None,
    since: Annotated[datetime | None, Query(description="RFC 3339, inclusive")] = None,
    until: Annotated[datetime | None, Query(description="RFC 3339, exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=events.MAX_LIMIT)] = events.DEFAULT_LIMIT,
    # No max_length here: a long cursor is a bad cursor, 400 invalid_cursor (events.Cursor).
    cursor: Annotated[str | None, Query(description="the next_cursor of the previous page; "
                                        "anything else is 400 invalid_cursor")] = None,
) -> EventPage:
    query = events.EventQuery(type=event_type, actor=actor, target=target, since=since,
                              until=until, limit=limit, cursor=cursor)
    return events.list_events(session, ws.id, query)
