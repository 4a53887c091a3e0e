"""The API's metrics: a request-counting ASGI middleware and ``GET /metrics``.

``install_metrics(app, store, endpoint=...)`` adds both (the endpoint only when it is
served on the API's own port). Requests are counted by method, route template
(``/v1/workspaces/{ws}/destinations``, never the raw path, so ids do not multiply
the series) and status; a path no route matches counts as ``unmatched``.
``/metrics`` serves ``auditrelay.observability.metrics.API_REGISTRY`` in the
Prometheus text format (or OpenMetrics, when asked), outside the OpenAPI schema,
without authentication, and reads the outbox backlog from the database when it is
scraped.

``MetricsListener`` serves the same endpoint on an address and port of its own
(``api_metrics_address``, ``api_metrics_port``), so that an API whose port faces
tenants does not show them its metrics. It runs uvicorn in a thread of the API's
process, started and stopped by the app's lifespan; as the worker's endpoint, a port
already taken leaves the API running unmeasured, with an error saying so.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, Response
from prometheus_client.exposition import choose_encoder
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.routing import Route

from auditrelay.observability import metrics
from auditrelay.store.db import OutboxEntry
from auditrelay.store.engine import Store

__all__ = ["MetricsListener", "RequestMetrics", "install_metrics", "metrics_app",
           "outbox_backlog"]

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


def scrape(store: Store, request: Request) -> Response:
    """The API's series, with the outbox backlog counted now, in the format asked for."""
    try:
        metrics.OUTBOX_BACKLOG.set(outbox_backlog(store))
    except Exception as exc:  # the database is down: the other series still help
        log.warning("metrics: cannot count outbox entries: %s", exc)
    # The format the scraper asks for, as the worker's endpoint (prometheus_client) does.
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(metrics.API_REGISTRY), headers={"Content-Type": content_type})


def install_metrics(app: FastAPI, store: Store, *, endpoint: bool = True) -> None:
    """Count ``app``'s requests; ``endpoint``: serve ``GET /metrics`` on its port too."""
    app.add_middleware(RequestMetrics)
    if not endpoint:
        return

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics(request: Request) -> Response:
        return scrape(store, request)


def metrics_app(store: Store) -> Starlette:
    """An app of one route, ``GET /metrics``, for the listener of its own."""
    def prometheus_metrics(request: Request) -> Response:  # sync: Starlette runs it in a thread
        return scrape(store, request)

    return Starlette(routes=[Route("/metrics", prometheus_metrics, methods=["GET"])])


class MetricsListener:
    """``app`` served by uvicorn on ``address:port`` in a thread, from ``start`` to ``stop``."""

    def __init__(self, app: Starlette, address: str, port: int) -> None:
        self.address = address
        self.port = port
        # log_config=None: the process's logging is configured already (auditrelay api).
        self._server = uvicorn.Server(uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", ws="none",
            loop="asyncio", http="h11"))
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Listen and serve; ``False`` (and an error logged) when the port cannot be had."""
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        try:
            # Bound here rather than by uvicorn, which would exit the whole process.
            sock = socket.create_server((self.address, self.port), family=family)
        except OSError as exc:
            log.error("API metrics listener not started: cannot listen on %s:%d (%s); give "
                      "each API on a machine its own AUDITRELAY_API_METRICS_PORT",
                      self.address, self.port, exc)
            return False
        self.port = sock.getsockname()[1]  # the one chosen when asked for port 0
        # Listening already: a scrape before the thread runs waits in the backlog.
        self._thread = threading.Thread(target=self._serve, args=(sock,), daemon=True,
                                        name="api-metrics")
        self._thread.start()
        log.info("API metrics on http://%s:%d/metrics", self.address, self.port)
        return True

    def _serve(self, sock: socket.socket) -> None:
        try:
            # In a thread that is not the main one, uvicorn leaves the signals alone.
            asyncio.run(self._server.serve(sockets=[sock]))
        except Exception:
            log.exception("API metrics listener on %s:%d stopped", self.address, self.port)
        finally:
            sock.close()

    def stop(self) -> None:
        """Stop serving and wait for the thread (uvicorn checks every 0.1 s)."""
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._thread = None
