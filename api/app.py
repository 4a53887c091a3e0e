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
from auditrelay.api.observability import MetricsListener, install_metrics, metrics_app
from auditrelay.api.ratelimit import ApiLimits, retry_after_header
from auditrelay.api.routes import destinations, events, health, tokens, workspaces
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
    InvalidCursorError,
    InvalidInputError,
    KafkaError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitedError,
)
from auditrelay.schemas.settings import Settings
from auditrelay.store.engine import Store, checked_engine
from auditrelay.store.outbox import OutboxPublisher
from auditrelay.wire.client import DeliveryClient, DeliveryConfig
from auditrelay.wire.secrets import box_from_settings
from auditrelay.wire.ssrf import Resolver, system_resolver

log = logging.getLogger(__name__)

_STATUS: list[tuple[type[AuditRelayError], int, str]] = [
    # Before InvalidInputError, its base: a bad page cursor gets its own status and code.
    (InvalidCursorError, 400, "invalid_cursor"),
    (InvalidInputError, 422, "invalid_request"),
    (AuthenticationError, 401, "unauthorized"),
    (PermissionDeniedError, 403, "forbidden"),
    (NotFoundError, 404, "not_found"),
    (EntitlementError, 402, "plan_required"),
    # Before ConflictError, its base: a quota gets its own code.
    (QuotaExceededError, 409, "quota_exceeded"),
    (ConflictError, 409, "conflict"),
    (RateLimitedError, 429, "rate_limited"),
    (KafkaError, 503, "kafka_unavailable"),
]

#: The error answers of the OpenAPI document (every operation's), with their codes.
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": description} for status, description in (
        (400, "`invalid_cursor`: a page cursor this API did not return; "
              "`invalid_request`: a malformed Content-Length"),
        (401, "`unauthorized`: no or unknown bearer token"),
        (402, "`plan_required`: the workspace's plan lacks the feature"),
        (403, "`forbidden`: the token may not do this"),
        (404, "`not_found`: no such object, or not this token's"),
        (409, "`quota_exceeded`: a per-workspace limit is reached; "
              "`conflict`: the request clashes with the current state"),
        (413, "`payload_too_large`: the body is larger than the API reads"),
        (422, "`invalid_request`: a parameter or body field is wrong; the message names it"),
        (429, "`rate_limited`: too many requests; wait the seconds of Retry-After"),
    )
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
                if isinstance(exc, RateLimitedError):
                    headers = {"Retry-After": retry_after_header(exc.retry_after)}
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

    # /metrics on a listener of its own, off the port that may face tenants (docs/metrics.md).
    metrics_port = settings.api_metrics_port
    listener = MetricsListener(metrics_app(store), settings.api_metrics_address,
                               metrics_port) if metrics_port else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with DeliveryClient(DeliveryConfig.from_settings(settings), resolver=resolver,
                                  ssl_context=ssl_context) as client:
            service.client = client
            if publisher is not None:
                publisher.start()
            if view is not None:
                view.start()
            if listener is not None:
                listener.start()
            try:
                yield
            finally:
                if listener is not None:
                    await run_in_threadpool(listener.stop)
                if view is not None:
                    await view.stop()
                if publisher is not None:
                    await run_in_threadpool(publisher.stop)
                store.dispose()

    # Without the document FastAPI serves neither /docs nor /redoc: all three are 404.
    app = FastAPI(title="auditrelay management API", version=VERSION,
                  lifespan=lifespan, responses=ERRORS,
                  openapi_url="/openapi.json" if settings.api_docs else None)
    app.state.service = service
    app.state.store = store
    app.state.publisher = publisher
    app.state.limits = ApiLimits.from_settings(settings)  # this process's, docs/api.md
    _install_error_handlers(app)
    # Before the metrics, which then wrap it and count its refusals too.
    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    install_metrics(app, store, endpoint=metrics_port is None)
    for resource in (health, workspaces, events, destinations, tokens):
        app.include_router(resource.router)
    install_web(app, settings)
    return app

