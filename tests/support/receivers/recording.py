"""The ASGI plumbing the strict fakes share: read a request whole, let the fake answer
it, record both. Serve a fake with ``tests.support.servers.serve(fake)``."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["Answer", "Exchange", "RecordingApp", "json_answer"]


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"


def json_answer(status: int, value: Any, *headers: tuple[str, str]) -> Answer:
    return Answer(status, json.dumps(value).encode(), headers)


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
    state changes one request at a time); every exchange is kept in :attr:`exchanges`."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self.lock = threading.Lock()

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        raise NotImplementedError

    def snapshot(self) -> list[Exchange]:
        with self.lock:
            return list(self.exchanges)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        if scope.get("query_string"):
            path += "?" + scope["query_string"].decode("latin-1")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        with self.lock:
            answer = self.handle(scope["method"], path, headers, body)
            self.exchanges.append(Exchange(time.monotonic(), scope["method"], path, headers,
                                           body, answer))
        fields = [(b"content-type", answer.content_type.encode()),
                  *((k.encode(), v.encode()) for k, v in answer.headers)]
        if scope.get("scheme") == "https":
            fields.append((b"connection", b"close"))  # see tests.support.servers.Receiver
        await send({"type": "http.response.start", "status": answer.status, "headers": fields})
        await send({"type": "http.response.body", "body": answer.body})
