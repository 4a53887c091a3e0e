"""The API's dependencies: its process's service, the transaction, the caller, the workspace.

``create_app`` puts the process's objects on ``app.state`` once (``service``,
``store``, ``publisher``); the routers reach them only through this module, as
FastAPI dependencies (``Tx``, ``Who``, ``Ws``, ``Readable``, ``ServiceDep``) or,
where a route opens its own transaction (a test send, the settings page), through
``committed``. Path ids go through ``WorkspaceId``, ``DestinationId`` and ``TokenId``
first: one that is not well formed is a 404 before anything uses it (a cookie path, a
header, a query, a log line).

FastAPI runs a plain ``def`` dependency in the thread pool, one hop there and back per
dependency; those that do no I/O are ``async def`` so that they run on the event loop,
and ``transaction`` hops only where the database is used (docs/scaling.md, part 5).
A workspace dependency (``Ws``, ``Readable``) authenticates the caller in its own hop
and keeps the ``Principal`` on the request, where ``Who`` finds it without another.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import bindparam, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value
from starlette.applications import Starlette

from auditrelay.api.ratelimit import ApiLimits, client_address
from auditrelay.api.service import ADMIN_ACTOR, Actor, Service, storable, workspace_actor
from auditrelay.api.tokens import same_secret
from auditrelay.schemas.errors import AuthenticationError, NotFoundError
from auditrelay.schemas.ids import is_destination_id, is_token_id, is_workspace_id
from auditrelay.store.db import Workspace, WorkspaceToken, utcnow
from auditrelay.store.engine import Store
from auditrelay.store.outbox import OutboxPublisher

__all__ = [
    "DestinationId",
    "Principal",
    "Readable",
    "ServiceDep",
    "TokenId",
    "Tx",
    "Who",
    "WorkspaceId",
    "Ws",
    "caller",
    "committed",
    "destination_id",
    "forwarding_workspace",
    "forwarding_workspace_of",
    "get_service",
    "principal",
    "token_id",
    "transaction",
    "visible_workspace",
    "workspace_id",
    "workspace_seen_by",
]


@dataclass(frozen=True)
class Principal:
    """Who called: the admin, or the holder of one workspace's token."""

    admin: bool
    workspace_id: str | None = None

    @property
    def actor(self) -> Actor:
        return ADMIN_ACTOR if self.admin else workspace_actor(self.workspace_id or "")


async def get_service(request: Request) -> Service:
    return _service(request)


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


@contextmanager
def committed(app: Starlette) -> Iterator[Session]:
    """A transaction of ``app``'s store; once it is committed, the outbox publisher is
    woken so that what it enqueued is published now, not at the publisher's next poll."""
    store: Store = app.state.store
    publisher: OutboxPublisher | None = app.state.publisher
    with store.transaction() as session:
        yield session
    if publisher is not None:
        publisher.wake()


async def transaction(request: Request) -> AsyncIterator[Session]:
    """``committed``, entered on the event loop: the session connects at its first
    statement, in the thread that runs it, so opening it does no I/O. The end (commit or
    rollback) runs in the thread pool, unless the route committed already (a creation
    does, in its own thread): then nothing is left to send to the database."""
    manager = committed(request.app)
    session = manager.__enter__()
    try:
        yield session
    except BaseException as exc:
        # A rollback (I/O); the manager never swallows the error, which goes on.
        await run_in_threadpool(manager.__exit__, type(exc), exc, exc.__traceback__)
        raise
    if session.in_transaction():
        await run_in_threadpool(manager.__exit__, None, None, None)
    else:
        manager.__exit__(None, None, None)  # closes a session that holds no connection


# scope="function": commit before the response is sent. With the default
# ("request") the commit ran after it, so a client could be told 201 and use
# the new token or destination before it existed, or even if the commit failed.
Tx = Annotated[Session, Depends(transaction, scope="function")]


Authorization = Annotated[str | None, Header()]


async def caller(request: Request, authorization: Authorization = None) -> Principal:
    """:func:`principal`, once per request: a workspace dependency that ran before has
    authenticated the caller already, in its own hop to the thread pool."""
    known = _known(request)
    if known is not None:
        return known
    return await run_in_threadpool(principal, request, authorization)


def principal(request: Request, authorization: Authorization = None,
              session: Session | None = None) -> Principal:
    """The caller of ``Authorization: Bearer <token>``: the admin or a workspace.

    A workspace token is looked up in ``session``, the route's transaction, when given
    (the token's workspace is then in it, and a route reading that workspace sends no
    other query), else in a transaction of its own.

    Refused tokens are counted per client address and per path workspace; past the limit
    the caller gets 429 before its token is checked (``auditrelay.api.ratelimit``).
    """
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError("missing bearer token: send Authorization: Bearer <token>")
    token = token.strip()
    # A caller that failed too often is refused before its token is even looked at.
    limits: ApiLimits = request.app.state.limits
    address, ws = client_address(request), request.path_params.get("ws")
    ws = ws if isinstance(ws, str) and is_workspace_id(ws) else None
    limits.check_authentication(address, ws)
    service = _service(request)
    admin = service.settings.admin_token
    if admin is not None and same_secret(token, admin.get_secret_value()):
        return _remember(request, Principal(admin=True))
    store: Store = request.app.state.store
    if session is None:
        with store.transaction() as own:
            workspace = service.workspace_for_token(own, token)
    else:
        workspace = _workspace_in(store, session, token)
    if workspace is None:
        limits.failed_authentication(address, ws, via="bearer")
        raise AuthenticationError("invalid bearer token")
    return _remember(request, Principal(admin=False, workspace_id=workspace.id))


def _workspace_in(store: Store, session: Session, token: str) -> Workspace | None:
    """The token's workspace, read in ``session``, which is left without a write: a due
    ``last_used_at`` is written in a transaction of its own, so that the route's
    transaction never holds the token's row (another request's revocation of tokens
    could otherwise deadlock with it on PostgreSQL)."""
    found = Service.token_and_workspace(session, token)
    if found is None:
        return None
    row, workspace = found
    # The session's identity map holds clean objects weakly: kept here, the route's
    # session.get(Workspace, ...) finds the workspace without another query.
    session.info["caller"] = (row, workspace)
    now = utcnow()
    if Service.token_use_due(row, now):
        with store.transaction() as own:
            own.execute(_NOTE_USE, {"token_id": row.id, "now": now})
        # What the route reads of the row (a token listing) shows the use too.
        set_committed_value(row, "last_used_at", now)
    return workspace


_NOTE_USE = (update(WorkspaceToken).where(WorkspaceToken.id == bindparam("token_id"))
             .values(last_used_at=bindparam("now")))


def _remember(request: Request, who: Principal) -> Principal:
    request.state.principal = who
    return who


Who = Annotated[Principal, Depends(caller)]


async def workspace_id(ws: str) -> str:
    """The path's ``ws`` if it is a well-formed workspace id (``auditrelay.schemas.ids``)."""
    if not is_workspace_id(ws):
        # The value is not echoed: it may hold anything, control characters included.
        raise NotFoundError("no such workspace")
    return ws


async def destination_id(dest_id: str) -> str:
    """The path's ``dest_id`` if it is a well-formed destination id."""
    if not is_destination_id(dest_id):
        raise NotFoundError("no such destination")
    return dest_id


async def token_id(token_id: str) -> str:
    """The path's ``token_id`` if it is a well-formed token id (``tok_...``)."""
    if not is_token_id(token_id):
        raise NotFoundError("no such token")
    return token_id


WorkspaceId = Annotated[str, Depends(workspace_id)]
DestinationId = Annotated[str, Depends(destination_id)]
TokenId = Annotated[str, Depends(token_id)]


def visible_workspace(request: Request, ws: WorkspaceId, session: Tx,
                      authorization: Authorization = None) -> Workspace:
    """The workspace ``ws`` if the caller (authenticated here first) may see it."""
    return workspace_seen_by(ws, _authenticated(request, authorization, session), session)


def _authenticated(request: Request, authorization: str | None,
                   session: Session | None = None) -> Principal:
    known = _known(request)
    return known if known is not None else principal(request, authorization, session)


def _known(request: Request) -> Principal | None:
    """The caller as :func:`principal` left it on the request, if it ran."""
    known: Principal | None = getattr(request.state, "principal", None)
    return known


def workspace_seen_by(ws: str, who: Principal, session: Session) -> Workspace:
    """The workspace ``ws`` if ``who`` may see it."""
    if not who.admin and who.workspace_id != ws:
        # 404, not 403: another tenant's workspace must look like no workspace.
        raise NotFoundError(f"no workspace {ws}")
    found = session.get(Workspace, ws) if storable(ws) else None
    if found is None:
        raise NotFoundError(f"no workspace {ws}")
    return found


def forwarding_workspace(request: Request, ws: str, session: Tx, service: ServiceDep,
                         authorization: Authorization = None) -> Workspace:
    """The workspace ``ws`` if the caller may see it and its plan includes forwarding."""
    return forwarding_workspace_of(ws, _authenticated(request, authorization, session),
                                   session, service)


def forwarding_workspace_of(ws: str, who: Principal, session: Session,
                            service: Service) -> Workspace:
    """The workspace ``ws`` if ``who`` may see it and its plan includes forwarding."""
    found = workspace_seen_by(ws, who, session)
    service.require_forwarding(found)
    return found


Ws = Annotated[Workspace, Depends(forwarding_workspace)]
# Every plan may read its own audit log and manage its own tokens: no forwarding check
# (docs/archive.md, docs/api.md).
Readable = Annotated[Workspace, Depends(visible_workspace)]
