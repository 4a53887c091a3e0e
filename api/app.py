"""The management API of contract section 5, as a FastAPI application.

``create_app(settings)`` builds one app per process: the database (migrated at
start), the key for secrets at rest, the outbox publisher thread and the one
SSRF-safe delivery client. Errors are JSON ``{"error": {"code", "message"}}``.
"""


import logging
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException

from auditrelay.api import events
from auditrelay.api.deliveries import DeliveryView
from auditrelay.api.models import (
    DeliveryList,
    DestinationCreated,
    DestinationIn,
    DestinationList,
    DestinationOut,
    DestinationPatch,
    ErrorOut,
    EventPage,
    SecretOut,
    TestResult,
    WorkspaceCreated,
    WorkspaceIn,
)
from auditrelay.api.observability import install_metrics
from auditrelay.api.service import (
    ADMIN_ACTOR,
    VERSION,
    Actor,
    Service,
    storable,
    workspace_actor,
)
from auditrelay.api.tokens import same_secret
from auditrelay.api.web import install_web
from auditrelay.kafka.admin import admin_client
from auditrelay.producer.config import ProducerConfig
from auditrelay.schemas.errors import (
    AuditRelayError,
    AuthenticationError,
    ConflictError,
    EntitlementError,
    InvalidInputError,
    KafkaError,
    NotFoundError,
    PermissionDeniedError,
)
from auditrelay.schemas.settings import Settings
from auditrelay.store.db import Workspace
from auditrelay.store.engine import Store, make_engine
from auditrelay.store.outbox import OutboxPublisher
from auditrelay.wire.client import DeliveryClient, DeliveryConfig
from auditrelay.wire.secrets import box_from_settings
from auditrelay.wire.ssrf import Resolver, system_resolver

log = logging.getLogger(__name__)

_STATUS: list[tuple[type[AuditRelayError], int, str]] = [
    (InvalidInputError, 422, "invalid_request"),
    (AuthenticationError, 401, "unauthorized"),
    (PermissionDeniedError, 403, "forbidden"),
    (NotFoundError, 404, "not_found"),
    (EntitlementError, 402, "plan_required"),
    (ConflictError, 409, "conflict"),
    (KafkaError, 503, "kafka_unavailable"),
]

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut} for status in (401, 402, 403, 404, 422)
}


@dataclass(frozen=True)
class Principal:
    admin: bool
    workspace_id: str | None = None

    @property
    def actor(self) -> Actor:
        return ADMIN_ACTOR if self.admin else workspace_actor(self.workspace_id or "")


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AuditRelayError)
    async def _ours(_: Request, exc: AuditRelayError) -> JSONResponse:
        for kind, status, code in _STATUS:
            if isinstance(exc, kind):
                headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
                return error_response(status, code, str(exc), headers)
        log.error("unhandled %s: %s", type(exc).__name__, exc)
        return error_response(500, "internal", "internal error")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected %s in a request", type(exc).__name__, exc_info=exc)
        return error_response(500, "internal", "internal error")


def create_app(settings: Settings, *, resolver: Resolver = system_resolver,
               publish: bool = True, ssl_context: ssl.SSLContext | None = None) -> FastAPI:
    """The API for ``settings``; ``publish=False`` (tests without Kafka) neither publishes
    outbox entries nor reads delivery status from Kafka.

    ``ssl_context`` replaces the test delivery's default TLS context (the system's
    trust store); tests pass one trusting their own certificate authority.
    """
    store = Store(make_engine(settings.database_url))
    view = DeliveryView(settings) if publish else None
    service = Service(settings, box_from_settings(settings), resolver=resolver, view=view)
    publisher = OutboxPublisher(
        store, ProducerConfig.from_settings(settings, client_id="auditrelay-api").kafka_config(),
        admin_client(settings.kafka_bootstrap)) if publish else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with DeliveryClient(DeliveryConfig.from_settings(settings), resolver=resolver,
                                  ssl_context=ssl_context) as client:
            service.client = client
            if publisher is not None:
                publisher.start()
            if view is not None:
                view.start()
            try:
                yield
            finally:
                if view is not None:
                    await view.stop()
                if publisher is not None:
                    await run_in_threadpool(publisher.stop)
                store.dispose()

    app = FastAPI(title="auditrelay management API", version=VERSION,
                  lifespan=lifespan, responses=ERRORS)
    app.state.service = service
    app.state.store = store
    app.state.publisher = publisher
    _install_error_handlers(app)
    install_metrics(app, store)
    _routes(app, settings, service, store, publisher)
    install_web(app, settings, service, store, publisher)
    return app


def _routes(app: FastAPI, settings: Settings, service: Service, store: Store,
            publisher: OutboxPublisher | None) -> None:
    def transaction() -> Iterator[Session]:
        with store.transaction() as session:
            yield session
        if publisher is not None:
            publisher.wake()

    # scope="function": commit before the response is sent. With the default
    # ("request") the commit ran after it, so a client could be told 201 and use
    # the new token or destination before it existed, or even if the commit failed.
    Tx = Annotated[Session, Depends(transaction, scope="function")]

    def principal(authorization: Annotated[str | None, Header()] = None) -> Principal:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("missing bearer token: send Authorization: Bearer <token>")
        token = token.strip()
        admin = settings.admin_token
        if admin is not None and same_secret(token, admin.get_secret_value()):
            return Principal(admin=True)
        with store.transaction() as session:
            workspace = service.workspace_for_token(session, token)
        if workspace is None:
            raise AuthenticationError("invalid bearer token")
        return Principal(admin=False, workspace_id=workspace.id)

    Who = Annotated[Principal, Depends(principal)]

    def visible_workspace(ws: str, who: Who, session: Tx) -> Workspace:
        if not who.admin and who.workspace_id != ws:
            # 404, not 403: another tenant's workspace must look like no workspace.
            raise NotFoundError(f"no workspace {ws}")
        found = session.get(Workspace, ws) if storable(ws) else None
        if found is None:
            raise NotFoundError(f"no workspace {ws}")
        return found

    def workspace(ws: str, who: Who, session: Tx) -> Workspace:
        found = visible_workspace(ws, who, session)
        service.require_forwarding(found)
        return found

    Ws = Annotated[Workspace, Depends(workspace)]
    # Every plan may read its own audit log: no forwarding check (docs/archive.md).
    Readable = Annotated[Workspace, Depends(visible_workspace)]

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/workspaces", status_code=201, response_model=WorkspaceCreated)
    def create_workspace(body: WorkspaceIn, who: Who, session: Tx) -> WorkspaceCreated:
        if not who.admin:
            if settings.admin_token is None:
                raise PermissionDeniedError("the admin API is off: AUDITRELAY_ADMIN_TOKEN is unset")
            raise PermissionDeniedError("this endpoint needs the admin token")
        created, token = service.create_workspace(session, body.name, body.plan)
        return WorkspaceCreated(id=created.id, name=created.name, plan=created.plan, token=token)

    @app.get("/v1/workspaces/{ws}/events", response_model=EventPage)
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
        cursor: Annotated[str | None, Query(max_length=1024)] = None,
    ) -> EventPage:
        query = events.EventQuery(type=event_type, actor=actor, target=target, since=since,
                                  until=until, limit=limit, cursor=cursor)
        return events.list_events(session, ws.id, query)

    base = "/v1/workspaces/{ws}/destinations"

    @app.get(base, response_model=DestinationList)
    def list_destinations(ws: Ws, session: Tx) -> DestinationList:
        return DestinationList(items=[service.to_out(d)
                                      for d in service.list_destinations(session, ws)])

    @app.post(base, status_code=201, response_model=DestinationCreated)
    def create_destination(ws: Ws, who: Who, body: DestinationIn,
                           session: Tx) -> DestinationCreated:
        dest, secret = service.create_destination(session, ws, body, who.actor)
        return DestinationCreated(**service.to_out(dest).model_dump(), secret=secret)

    @app.get(base + "/{dest_id}", response_model=DestinationOut)
    def get_destination(ws: Ws, dest_id: str, session: Tx) -> DestinationOut:
        return service.to_out(service.get_destination(session, ws, dest_id))

    @app.patch(base + "/{dest_id}", response_model=DestinationOut)
    def patch_destination(ws: Ws, who: Who, dest_id: str, body: DestinationPatch,
                          session: Tx) -> DestinationOut:
        return service.to_out(service.update_destination(session, ws, dest_id, body, who.actor))

    @app.delete(base + "/{dest_id}", status_code=204, response_class=Response)
    def delete_destination(ws: Ws, who: Who, dest_id: str, session: Tx) -> Response:
        service.delete_destination(session, ws, dest_id, who.actor)
        return Response(status_code=204)

    @app.get(base + "/{dest_id}/deliveries", response_model=DeliveryList)
    def list_deliveries(ws: Ws, dest_id: str, session: Tx,
                        limit: Annotated[int, Query(ge=1, le=50)] = 50) -> DeliveryList:
        """Recent delivery attempts of the destination, newest first (the last day)."""
        dest = service.get_destination(session, ws, dest_id)
        return DeliveryList(items=service.recent_attempts(dest.id, limit))

    @app.post(base + "/{dest_id}/rotate-secret", response_model=SecretOut)
    def rotate_secret(ws: Ws, who: Who, dest_id: str, session: Tx) -> SecretOut:
        return SecretOut(secret=service.rotate_secret(session, ws, dest_id, who.actor))

    @app.post(base + "/{dest_id}/test", response_model=TestResult)
    async def test_destination(ws: str, who: Who, dest_id: str) -> TestResult:
        def prepare() -> tuple[str, bytes, dict[str, str]]:
            with store.transaction() as session:
                found = workspace(ws, who, session)
                dest = service.get_destination(session, found, dest_id)
                return service.prepare_test(session, dest, who.actor)

        url, body, headers = await run_in_threadpool(prepare)
        if publisher is not None:
            publisher.wake()
        result = await service.send_test(url, body, headers)
        return TestResult(delivered=result.ok, status_code=result.status_code,
                          latency_ms=result.latency_ms, error=result.error)
