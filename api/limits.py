"""The API's limit on request bodies: ``BodyLimit``, a pure ASGI middleware.

Every body is refused over ``max_bytes`` before the app reads it, so neither
authentication nor parsing ever sees (or buffers) an oversized body. A declared
``Content-Length`` over the limit is answered 413 at once, the body unread; a body
without one (chunked) is counted as the app receives it, and the moment the count
passes the limit the request is answered 413 and the app gets no more of it. A
malformed ``Content-Length`` is answered 400. Errors have the API's shape,
``{"error": {"code", "message"}}``. The server discards the rest of a refused body
as it arrives, so it never accumulates in memory.

It is pure ASGI because Starlette's ``BaseHTTPMiddleware`` reads the body itself.
"""

from __future__ import annotations

from contextlib import suppress

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimit"]


class _BodyTooLarge(Exception):
    """Unwinds the app once its body passed the limit; caught by ``BodyLimit`` only.

    Deliberately not an ``AuditRelayError``: the app's handlers of those would log it
    and answer on top of the 413 that has already been sent.
    """


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _too_large(max_bytes: int) -> JSONResponse:
    return _error(413, "payload_too_large",
                  f"the request body is larger than the limit of {max_bytes} bytes")


def _declared_length(scope: Scope) -> int | None:
    """The ``Content-Length`` of the request, ``None`` without one; ``ValueError`` if bad."""
    values = {value.strip() for name, value in scope["headers"]
              if name.lower() == b"content-length"}
    if not values:
        return None
    if len(values) > 1:
        raise ValueError("the request has conflicting Content-Length headers")
    value = values.pop()
    if not value.isdigit():  # bytes.isdigit: ASCII digits only, no sign, no spaces
        raise ValueError("Content-Length must be a whole number of bytes")
    return int(value)


class _Counted:
    """The app's ``receive`` and ``send`` for one request, counting its body."""

    def __init__(self, max_bytes: int, scope: Scope, receive: Receive, send: Send) -> None:
        self.max_bytes = max_bytes
        self._scope = scope
        self.received = 0
        self.refused = False
        self.started = False  # the app's response has begun: a 413 can no longer be sent
        self._receive = receive
        self._send = send

    async def receive(self) -> Message:
        if self.refused:
            raise _BodyTooLarge
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.max_bytes:
                self.refused = True
                if not self.started:
                    await _too_large(self.max_bytes)(self._scope, self._receive, self._send)
                raise _BodyTooLarge
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return  # the 413 is the answer; whatever the app says while unwinding is not
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` with 413 ``payload_too_large``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            declared = _declared_length(scope)
        except ValueError as exc:
            await _error(400, "invalid_request", str(exc))(scope, receive, send)
            return
        if declared is not None and declared > self.max_bytes:
            await _too_large(self.max_bytes)(scope, receive, send)
            return
        # Counted even when declared: the limit must not rest on the server's framing.
        counted = _Counted(self.max_bytes, scope, receive, send)
        # The 413 went out when the count passed the limit; if the app had already
        # begun answering, the server ends the cut-short response by closing.
        with suppress(_BodyTooLarge):
            await self.app(scope, counted.receive, counted.send)
