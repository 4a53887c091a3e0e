"""The base of the strict fakes: read a request whole, let the fake answer it, record
both. A fake subclasses ``RecordingApp`` and holds only its vendor's rules (``handle``).
Serve a fake with ``tests.support.servers.serve(fake)`` (or ``Server(fake, cert=...)``).
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar

from tests.support.servers import read_request, send_answer

__all__ = ["Answer", "EncodingRefused", "Exchange", "RecordingApp", "decoded_body",
           "json_answer"]


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"


def json_answer(status: int, value: Any, *headers: tuple[str, str]) -> Answer:
    return Answer(status, json.dumps(value).encode(), headers)


class EncodingRefused(Exception):
    """A body in a ``Content-Encoding`` the vendor does not take (``unsupported``), or
    one that does not decode."""

    def __init__(self, encoding: str, *, unsupported: bool) -> None:
        super().__init__(encoding)
        self.encoding = encoding
        self.unsupported = unsupported


def decoded_body(headers: dict[str, str], body: bytes,
                 encodings: tuple[str, ...] = ("gzip", "deflate")) -> bytes:
    """``body`` decompressed as its ``Content-Encoding`` says, if one of ``encodings``
    (none: as it is); else ``EncodingRefused``."""
    encoding = headers.get("content-encoding", "identity").lower()
    if encoding == "identity":
        return body
    if encoding not in encodings or encoding not in ("gzip", "deflate"):
        raise EncodingRefused(encoding, unsupported=True)
    try:
        return gzip.decompress(body) if encoding == "gzip" else zlib.decompress(body)
    except (OSError, EOFError, zlib.error):
        raise EncodingRefused(encoding, unsupported=False) from None


@dataclass(frozen=True)
class Exchange:
    """One request a fake got (header names lower case) and what it answered."""

    at: float
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    answer: Answer


class RecordingApp:
    """An ASGI app: subclasses implement :meth:`handle` (called under the lock, so a fake's
    state changes one request at a time); every exchange is kept in :attr:`exchanges`.

    ``handle`` gets the raw path with its query (``/_bulk?filter_path=...``) and the
    headers in lower case. Headers named in ``unrecorded_headers`` (a credential a test
    could print) are seen by ``handle`` but not kept.
    """

    unrecorded_headers: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self.lock = threading.Lock()

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        raise NotImplementedError

    def snapshot(self) -> list[Exchange]:
        with self.lock:
            return list(self.exchanges)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        request = await read_request(scope, receive, send)
        if request is None:
            return
        kept = {k: v for k, v in request.headers.items() if k not in self.unrecorded_headers}
        with self.lock:
            answer = self.handle(request.method, request.path, request.headers, request.body)
            self.exchanges.append(Exchange(time.monotonic(), request.method, request.path, kept,
                                           request.body, answer))
        await send_answer(scope, send, answer.status, [
            (b"content-type", answer.content_type.encode()),
            *((k.encode(), v.encode()) for k, v in answer.headers)], answer.body)
