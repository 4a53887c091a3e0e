"""Real servers on loopback for tests: an ASGI app under uvicorn in a thread, and the
one HTTP receiver the tests deliver to.

- ``Server`` / ``serve``: any ASGI app (the API, a ``Receiver``) on 127.0.0.1 at a free
  port, plain HTTP or, given a trustme certificate, HTTPS.
- ``read_request`` / ``send_answer``: the ASGI plumbing every fake receiver shares
  (lifespan, the whole body, the answer), so that a fake holds only its rules.
- ``Receiver``: an ASGI app that records every request (method, path, headers, body,
  when) and answers as scripted: one status for all, or ``respond(n)`` per request n,
  after an optional delay. ``with Receiver(...) as rx`` serves it too (``rx.url``).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import trustme
import uvicorn

__all__ = ["Received", "Receiver", "Request", "Responder", "Server", "free_port",
           "read_request", "send_answer", "serve"]

_DEADLINE = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """``app`` served by uvicorn on 127.0.0.1 (a free port) in a thread, until ``stop``.

    With ``cert`` (a trustme leaf certificate) it speaks HTTPS; clients must trust
    the certificate's CA and name its host (the resolver maps that name to loopback).
    """

    def __init__(self, app: Any, *, cert: trustme.LeafCert | None = None) -> None:
        with ExitStack() as files:
            pem = None if cert is None else files.enter_context(
                cert.private_key_and_cert_chain_pem.tempfile())
            config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None,
                                    lifespan="on", ws="none", http="h11", loop="asyncio",
                                    ssl_certfile=pem)
            config.load()  # here, while the key and chain are in their file
        self.scheme = "https" if cert is not None else "http"
        self.port = 0
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="test-server",
                                        daemon=True)

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> Server:
        self._thread.start()
        deadline = time.monotonic() + _DEADLINE
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the test server stopped during startup (see the log)")
            if time.monotonic() > deadline:
                self._server.should_exit = True
                raise RuntimeError("the test server did not start within the deadline")
            self._thread.join(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Close the port (connections to it are refused from now on); idempotent."""
        if not self._thread.is_alive():
            return
        self._server.should_exit = True
        self._thread.join(_DEADLINE)
        assert not self._thread.is_alive(), "the test server did not stop"

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextmanager
def serve(app: Any, *, cert: trustme.LeafCert | None = None) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    with Server(app, cert=cert) as server:
        yield server.base_url


# -- the ASGI plumbing of a receiver -------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One HTTP request, whole: ``path`` is the raw path and its query (``/a?b=c``),
    header names are lower case."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


async def read_request(scope: dict[str, Any], receive: Any, send: Any) -> Request | None:
    """The request of an ASGI ``http`` call, read whole; ``None`` when there is nothing to
    answer (a ``lifespan`` call, answered here, or a sender gone mid-request)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return None
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None  # the sender died mid-request (kill -9): no request was made
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    if scope.get("query_string"):
        path += "?" + scope["query_string"].decode("latin-1")
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    return Request(scope["method"], path, headers, body)


async def send_answer(scope: dict[str, Any], send: Any, status: int,
                      headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """Answer an ASGI ``http`` call: ``status``, ``headers`` (content type included), ``body``."""
    fields = list(headers)
    if scope.get("scheme") == "https":
        # asyncio closes a TLS connection by waiting (up to 30 s) for the peer's
        # close_notify, which an idle pooled client never sends: so no TLS connection
        # is left idle for the server's shutdown to close.
        fields.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": fields})
    await send({"type": "http.response.body", "body": body})


# -- the receiver --------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    """One request a ``Receiver`` got; header names are lower case (ASGI's)."""

    at: float
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    #: What the receiver answered.
    status: int = 0

    def events(self) -> list[Any]:
        """The body as JSON: the batch of CloudEvents a delivery carries."""
        batch: list[Any] = json.loads(self.body)
        return batch


#: ``respond(n)`` answers request n (0-based): a status and extra response headers.
Responder = Callable[[int], tuple[int, list[tuple[bytes, bytes]]]]


class Receiver:
    """An ASGI app that records every request and answers as scripted.

    ``status`` answers every request (a test may change it between requests), unless
    ``respond`` is given; each answer waits ``delay`` seconds first (a slow receiver).
    Serve it with ``serve(receiver)``, or as ``with Receiver(...) as rx`` (then
    ``rx.url`` is ``{scheme}://{host}:{port}{path}``; ``host`` defaults to 127.0.0.1,
    a name for ``cert`` is mapped to loopback by the test's resolver).
    """

    def __init__(self, respond: Responder | None = None, *, status: int = 200,
                 delay: float = 0.0, cert: trustme.LeafCert | None = None,
                 host: str = "127.0.0.1", path: str = "/") -> None:
        self.status = status
        self.delay = delay
        self.requests: list[Received] = []
        self._respond = respond
        self._lock = threading.Lock()
        self._cert = cert
        self._host = host
        self._path = path
        self._server: Server | None = None

    # -- as an ASGI app ----------------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        request = await read_request(scope, receive, send)
        if request is None:
            return
        with self._lock:
            index = len(self.requests)
            status, headers = (self._respond(index) if self._respond is not None
                               else (self.status, []))
            self.requests.append(Received(time.monotonic(), request.method, request.path,
                                          request.headers, request.body, status))
        if self.delay:
            await asyncio.sleep(self.delay)
        await send_answer(scope, send, status, [(b"content-type", b"application/json"),
                                                *headers], b"{}")

    @property
    def bodies(self) -> list[bytes]:
        with self._lock:
            return [r.body for r in self.requests]

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def event_ids(self) -> list[str]:
        """The ids of every event received so far, in order, repeats included."""
        return [str(event["id"]) for request in self.snapshot() for event in request.events()]

    # -- served by itself --------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "serve the receiver first: with Receiver(...) as rx"
        return f"{self._server.scheme}://{self._host}:{self._server.port}{self._path}"

    def stop(self) -> None:
        """Close its port: a delivery to it now finds the connection refused."""
        if self._server is not None:
            self._server.stop()

    def __enter__(self) -> Receiver:
        self._server = Server(self, cert=self._cert).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
