"""The API's metrics: a request-counting ASGI middleware and ``GET /metrics``.

``install_metrics(app, store)`` adds both. Requests are counted by method,
route template (``/v1/workspaces/{ws}/destinations``, never the raw path, so ids
do not multiply the series) and status; a path no route matches counts as
``unmatched``. ``/metrics`` serves ``auditrelay.observability.metrics.API_REGISTRY`` in the
Prometheus text format (or OpenMetrics, when asked), outside the OpenAPI
schema, without authentication (bind the API to a private interface, as by
default), and reads the outbox backlog from the database when it is scraped.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client.exposition import choose_encoder
from sqlalchemy import func, select

from auditrelay.observability import metrics
from auditrelay.store.db import OutboxEntry
from auditrelay.store.engine import Store

__all__ = ["RequestMetrics", "install_metrics", "outbox_backlog"]

log = logging.getLogger(__name__)

Scope = dict[str, Any]


class RequestMetrics:
    """ASGI middleware counting every HTTP request once it is answered (or failed: 500)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets if the app raises before answering

        async def send_and_note(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_and_note)
        finally:
            # The router put the matched route into the scope we share with it.
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics.count_api_request(scope.get("method", ""), route, status,
                                      time.perf_counter() - started)


def outbox_backlog(store: Store) -> int:
    with store.transaction() as session:
        return int(session.scalar(select(func.count()).select_from(OutboxEntry)) or 0)


def install_metrics(app: FastAPI, store: Store) -> None:
    app.add_middleware(RequestMetrics)

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics(request: Request) -> Response:
        try:
            metrics.OUTBOX_BACKLOG.set(outbox_backlog(store))
        except Exception as exc:  # the database is down: the other series still help
            log.warning("metrics: cannot count outbox entries: %s", exc)
        # The format the scraper asks for, as the worker's endpoint (prometheus_client) does.
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(metrics.API_REGISTRY), headers={"Content-Type": content_type})
