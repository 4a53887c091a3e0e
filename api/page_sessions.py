"""Server-side sessions of the settings page (``auditrelay.api.web``).

Signing in with a workspace token opens a session: the browser's cookie holds a
random id (``secrets.token_urlsafe(32)``, never the token), and ``page_sessions``
holds only its SHA-256 hash, the token that opened it and when it was last used. A
session unused for longer than the idle limit is gone (its row deleted when next
presented, or by the bounded clean-up each sign-in runs); signing out deletes it;
revoking its token deletes it (``close_for_token``, and ON DELETE CASCADE).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from auditrelay.store.db import PageSession, WorkspaceToken

__all__ = ["MAX_SESSIONS_PER_TOKEN", "REFRESH_INTERVAL", "Found", "close", "close_for_token",
           "find", "open_session", "purge_expired"]

#: ``last_seen_at`` is written at most this often per session: not on every request.
REFRESH_INTERVAL = timedelta(minutes=1)
#: Live sessions one token may hold: a sign-in beyond it ends the least recently used,
#: so that signing in over and over cannot grow the table without bound.
MAX_SESSIONS_PER_TOKEN = 20
#: Expired rows one sign-in deletes at most, so that no sign-in waits on a large purge.
PURGE_BATCH = 100
#: ``token_urlsafe(32)`` gives 43 characters; anything much longer is no id of ours
#: and is not even hashed.
_MAX_ID_LENGTH = 128
#: Bulk deletes leave the ORM's loaded objects alone: no request keeps a session row.
_UNSYNCED = {"synchronize_session": False}


def _hash(session_id: str) -> str:
    # 256 random bits need no slow hash: nobody can guess a preimage.
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True)
class Found:
    """A live session: whose it is, and whether this lookup counted as its use."""

    workspace_id: str
    token_id: str
    refreshed: bool


def open_session(db: Session, token: WorkspaceToken, now: datetime) -> str:
    """A new session of ``token``'s workspace; the id goes to the cookie, only its hash
    is stored."""
    session_id = secrets.token_urlsafe(32)
    oldest = (select(PageSession.id_hash).where(PageSession.token_id == token.id)
              .order_by(PageSession.last_seen_at.desc(), PageSession.id_hash)
              .offset(MAX_SESSIONS_PER_TOKEN - 1))
    db.execute(delete(PageSession).where(PageSession.id_hash.in_(oldest)),
               execution_options=_UNSYNCED)
    db.add(PageSession(id_hash=_hash(session_id), workspace_id=token.workspace_id,
                       token_id=token.id, created_at=now, last_seen_at=now))
    return session_id


def find(db: Session, session_id: str, *, idle: timedelta, now: datetime,
         active: bool) -> Found | None:
    """The live session of ``session_id``, or None; an expired one is deleted.

    ``active`` (a request a person made, not the page's automatic live-status stream)
    moves ``last_seen_at`` forward, at most once per ``REFRESH_INTERVAL``.
    """
    if not session_id or len(session_id) > _MAX_ID_LENGTH:
        return None
    row = db.get(PageSession, _hash(session_id))
    if row is None:
        return None
    if now - row.last_seen_at > idle:
        db.delete(row)
        return None
    refreshed = active and now - row.last_seen_at >= REFRESH_INTERVAL
    if refreshed:
        row.last_seen_at = now
    return Found(row.workspace_id, row.token_id, refreshed)


def close(db: Session, session_id: str) -> None:
    """Sign-out: the session is deleted, so its cookie opens nothing any more."""
    if session_id and len(session_id) <= _MAX_ID_LENGTH:
        db.execute(delete(PageSession).where(PageSession.id_hash == _hash(session_id)),
                   execution_options=_UNSYNCED)


def close_for_token(db: Session, token_id: str) -> None:
    """Every session opened with ``token_id`` (revocation; the foreign key's cascade does
    the same, this does not depend on SQLite's foreign keys being on)."""
    db.execute(delete(PageSession).where(PageSession.token_id == token_id),
               execution_options=_UNSYNCED)


def purge_expired(db: Session, *, idle: timedelta, now: datetime) -> None:
    """Delete at most ``PURGE_BATCH`` sessions idle for longer than ``idle``."""
    expired = (select(PageSession.id_hash).where(PageSession.last_seen_at < now - idle)
               .limit(PURGE_BATCH))
    db.execute(delete(PageSession).where(PageSession.id_hash.in_(expired)),
               execution_options=_UNSYNCED)
