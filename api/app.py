"""The management API of contract section 5, as a FastAPI application.

``create_app(settings)`` builds one app per process: the database (its schema
checked at start), the key for secrets at rest, the outbox publisher thread and the one
SSRF-safe delivery client, on ``app.state`` for the dependencies of
``auditrelay.api.deps``; then it includes the routers, one per resource
(``auditrelay.api.routes``), and the settings page's (``auditrelay.api.web``).
Bodies over ``api_max_body_bytes`` are refused before anything reads them
(``auditrelay.api.limits``). Errors are JSON ``{"error": {"code", "message"}}``.
"""


import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from auditrelay.api.deliveries import DeliveryView
from auditrelay.api.limits import BodyLimit
from auditrelay.api.models import ErrorOut
from auditrelay.api.observability import install_metrics
from auditrelay.api.routes import destinations, events, health, workspaces
from auditrelay.api.service import VERSION, Service
from auditrelay.api.tokens import check_admin_token
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
from auditrelay.store.engine import Store, checked_engine
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
    trust store); tests pass one trusting their own certificate authority. A weak admin
    token (``check_admin_token``) is a ``ConfigurationError`` before anything is opened.
    """
    token = settings.admin_token
    check_admin_token(None if token is None else token.get_secret_value())
    store = Store(checked_engine(settings.database_url))  # refuses a schema not at head
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
    # Before the metrics, which then wrap it and count its refusals too.
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    install_metrics(app, store)
    for resource in (health, workspaces, events, destinations):
        app.include_router(resource.router)
    install_web(app, settings)
    return app

