"""A strict fake of Datadog's HTTP logs intake (v2), from its public documentation.

https://docs.datadoghq.com/api/latest/logs/send-logs/ says, and this app enforces:
``POST /api/v2/logs`` only; the API key in ``DD-API-KEY`` (missing: 401, not the
accepted one: 403); ``Content-Encoding: gzip`` or ``deflate`` decoded, anything else
refused; at most 5 MB uncompressed (413; read as 5 000 000 bytes, the strict reading)
and 1 000 entries (400) per request; the body a JSON array of log objects (or one
object) whose ``message`` is a string and whose ``ddsource``/``ddtags``/``hostname``/
``service`` are strings (400 otherwise); 202 ``{}`` when taken. Errors carry
Datadog's body, ``{"errors": [{"status", "title", "detail"}]}``.

A test switches failures on: ``api_key`` (the key accepted now), ``forced`` (statuses
answered to the next requests, in order, whatever they carry). What it took is in
``logs`` (parsed log objects) and every request in ``requests`` (``received()`` gives
both at once; ``snapshot()`` the exchanges, never the key). Serve it with
``tests.support.servers.serve`` (plain HTTP on 127.0.0.1).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from tests.support.receivers.recording import (
    Answer,
    EncodingRefused,
    RecordingApp,
    decoded_body,
    json_answer,
)

__all__ = ["MAX_BYTES", "MAX_ENTRIES", "DatadogIntake", "IntakeRequest"]

MAX_BYTES = 5_000_000
MAX_ENTRIES = 1000
_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 413: "Payload Too Large", 415: "Unsupported Media Type",
           429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}
_STRING_ATTRIBUTES = ("ddsource", "ddtags", "hostname", "service")


@dataclass(frozen=True)
class IntakeRequest:
    """One request the intake got: what it carried (never the key) and its answer."""

    at: float
    path: str
    headers: dict[str, str]
    #: Uncompressed body bytes, and its entries (taken or not).
    size: int
    entries: int
    key_sent: bool
    status: int


class DatadogIntake(RecordingApp):
    """The ASGI app (see the module docstring)."""

    unrecorded_headers = frozenset({"dd-api-key"})

    def __init__(self, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key
        self.forced: list[int] = []
        self.logs: list[dict[str, Any]] = []
        self.requests: list[IntakeRequest] = []

    def received(self) -> tuple[list[IntakeRequest], list[dict[str, Any]]]:
        with self.lock:
            return list(self.requests), list(self.logs)

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        route = path.partition("?")[0]
        status, answer, size, logs = self._answer(method, route, headers, body)
        self.requests.append(IntakeRequest(
            time.monotonic(), route, {k: v for k, v in headers.items() if k != "dd-api-key"},
            size, len(logs), "dd-api-key" in headers, status))
        if status == 202:
            self.logs.extend(logs)
        return json_answer(status, answer)

    def _answer(self, method: str, route: str, headers: dict[str, str], body: bytes,
                ) -> tuple[int, Any, int, list[dict[str, Any]]]:
        if route != "/api/v2/logs":
            return *_error(404, "no such endpoint"), 0, []
        if method != "POST":
            return *_error(405, "use POST"), 0, []
        key = headers.get("dd-api-key")
        if not key:
            return *_error(401, "API key missing"), 0, []
        if key != self.api_key:
            return *_error(403, "Forbidden"), 0, []
        try:
            body = decoded_body(headers, body)
        except EncodingRefused as refused:
            if refused.unsupported:
                return *_error(415, f"unsupported content encoding {refused.encoding}"), 0, []
            return *_error(400, "the body could not be decompressed"), 0, []
        try:
            value = json.loads(body)
        except ValueError:
            value = None
        logs = value if isinstance(value, list) else [value] if value is not None else []
        forced = self.forced.pop(0) if self.forced else None
        if forced is not None:
            return *_error(forced, _TITLES.get(forced, "forced")), len(body), logs
        if len(body) > MAX_BYTES:
            return *_error(413, f"payload of {len(body)} bytes above {MAX_BYTES}"), len(body), logs
        if not headers.get("content-type", "").startswith("application/json"):
            return *_error(400, "content type must be application/json"), len(body), logs
        if value is None:
            return *_error(400, "malformed JSON"), len(body), []
        if len(logs) > MAX_ENTRIES:
            return *_error(400, f"{len(logs)} entries, more than {MAX_ENTRIES}"), len(body), logs
        for log in logs:
            if not isinstance(log, dict) or not isinstance(log.get("message"), str) or any(
                    name in log and not isinstance(log[name], str)
                    for name in _STRING_ATTRIBUTES):
                return *_error(400, "malformed log entry"), len(body), logs
        return 202, {}, len(body), logs


def _error(status: int, detail: str) -> tuple[int, dict[str, Any]]:
    return status, {"errors": [{"status": str(status), "title": _TITLES.get(status, "Error"),
                                "detail": detail}]}
