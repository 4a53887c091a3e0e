"""A strict fake of a Sumo Logic HTTP Logs and Metrics Source, written from Sumo Logic's
docs (see ``auditrelay.wire.kinds.sumo_logic`` for the pages).

What it enforces:

- ``POST /receiver/v1/http/<code>`` only (other methods 405, other paths 404); a code it
  does not know (never made, or its source deleted: ``delete``) gets 401, as "missing
  or invalid URL token" does;
- ``Content-Encoding``: gzip or deflate (the two Sumo supports) or none; a body that
  does not decode: 400;
- at most 1 MB of uncompressed data per request ("up to but not exceeding 1MB"): 413;
- UTF-8 only (Sumo's HTTP sources take UTF-8 data only): 400;
- a metrics ``Content-Type`` (``application/vnd.sumologic.*``) would make the body
  metrics, not logs: 400 here, since auditrelay only sends logs;
- logs: one message per line (this fake does no multiline detection; the docs
  tell customers how to turn it off for JSON lines). Stricter than Sumo, which takes
  any text: every line must be one JSON object (NDJSON, what auditrelay promises),
  else 400 and nothing of the request is kept.

Switches: ``throttle`` (the next n requests get 429 with ``Retry-After``),
``unavailable`` (the next n get 503), ``delete(code)``. It records every exchange and
each message (line) it took with the ``X-Sumo-*`` headers of its request.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

from tests.support.receivers.recording import Answer, EncodingRefused, RecordingApp, decoded_body

__all__ = ["MAX_BYTES", "Message", "SumoLogicFake"]

SOURCE_PATH = "/receiver/v1/http/"
MAX_BYTES = 1_000_000
_METRICS = "application/vnd.sumologic."


@dataclass(frozen=True)
class Message:
    line: bytes
    category: str | None
    name: str | None
    host: str | None


class SumoLogicFake(RecordingApp):
    def __init__(self) -> None:
        super().__init__()
        self.codes: set[str] = set()
        self.throttle = 0
        self.unavailable = 0
        self.retry_after = 1
        self.messages: list[Message] = []

    def new_source(self) -> str:
        """A new HTTP source's code (its URL's last segment: the credential)."""
        code = "ZaVn" + secrets.token_urlsafe(48)
        with self.lock:
            self.codes.add(code)
        return code

    def delete(self, code: str) -> None:
        with self.lock:
            self.codes.discard(code)

    def lines(self) -> list[bytes]:
        with self.lock:
            return [m.line for m in self.messages]

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if not path.startswith(SOURCE_PATH):
            return Answer(404, b"", content_type="text/plain")
        if method != "POST":
            return Answer(405, b"", content_type="text/plain")
        if path[len(SOURCE_PATH):] not in self.codes:
            return Answer(401, b"", content_type="text/plain")
        if self.throttle > 0:
            self.throttle -= 1
            return Answer(429, b"", (("Retry-After", str(self.retry_after)),), "text/plain")
        if self.unavailable > 0:
            self.unavailable -= 1
            return Answer(503, b"", content_type="text/plain")
        try:
            body = decoded_body(headers, body)
        except EncodingRefused as refused:
            words = b"unsupported encoding" if refused.unsupported else b"cannot decompress"
            return Answer(400, words, content_type="text/plain")
        if len(body) > MAX_BYTES:
            return Answer(413, b"", content_type="text/plain")
        if headers.get("content-type", "").startswith(_METRICS):
            return Answer(400, b"not logs", content_type="text/plain")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return Answer(400, b"UTF-8 only", content_type="text/plain")
        lines = [line for line in text.split("\n") if line.strip()]
        if not text.endswith("\n") or not all(_json_object(line) for line in lines):
            return Answer(400, b"not NDJSON", content_type="text/plain")
        for line in lines:
            if line:
                self.messages.append(Message(line.encode(), headers.get("x-sumo-category"),
                                             headers.get("x-sumo-name"),
                                             headers.get("x-sumo-host")))
        return Answer(200, b"", content_type="text/plain")


def _json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False
