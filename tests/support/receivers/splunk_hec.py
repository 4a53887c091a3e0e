"""A strict fake of Splunk's HTTP Event Collector (HEC), written from Splunk's docs (see
``auditrelay.wire.kinds.splunk_hec`` for the pages).

What it enforces, each with HEC's own answer (``{"text", "code"}``, HTTP status):

- ``POST /services/collector/event`` (or ``/event/1.0``) and ``/services/collector/ack``;
  anything else 404;
- ``Authorization: Splunk <token>``: missing 401 code 2 "Token is required"; another
  scheme 401 code 3 "Invalid authorization"; unknown 403 code 4 "Invalid token";
  disabled 403 code 1 "Token disabled";
- ``Content-Encoding: gzip`` bodies are decompressed (not gzip: 400 code 6); more than
  ``max_content_length`` (HEC's default, 1 MB) of content: 413;
- the body: JSON objects one after the other (whitespace between allowed), each with
  ``event`` (missing: 400 code 12; blank: 400 code 13), ``time`` a number (epoch
  seconds), ``host``/``source``/``sourcetype``/``index`` strings, ``fields`` an object
  of flat values (strings, numbers, or arrays of them; else 400 code 15), nothing else
  (400 code 6 "Invalid data format", with ``invalid-event-number``); an index the
  token may not write to: 400 code 7 "Incorrect index"; an empty body: 400 code 5
  "No data". As HEC does, the events before an invalid one are indexed;
- tokens with indexer acknowledgement (``ack=True``): the ``X-Splunk-Request-Channel``
  header is required (missing: 400 code 10; not a GUID: 400 code 11), the answer
  carries ``ackId``; ``/services/collector/ack`` answers ``{"acks": {id: bool}}`` for
  the ids of the channel (tokens without: 400 code 14 "ACK is disabled").

Switches for tests: ``tokens`` (known tokens; ``disabled`` ones), ``busy`` (the next
n event requests get 503 code 9 "Server is busy" with ``Retry-After``), ``refuse``
(a predicate on an event: such events are refused with 400 code 6 as invalid, the
way a mapping the indexer cannot take would be), ``ack_after`` (polls before an ack
says true), ``withhold_acks`` (acks never true while set).

It records every exchange, the HEC objects it indexed (``indexed``) and its acks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from tests.support.receivers.recording import (
    Answer,
    EncodingRefused,
    RecordingApp,
    decoded_body,
    json_answer,
)

__all__ = ["SplunkHecFake"]

EVENT_PATHS = ("/services/collector/event", "/services/collector/event/1.0")
ACK_PATH = "/services/collector/ack"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                   r"[0-9a-fA-F]{12}$")
_KEYS = frozenset({"time", "host", "source", "sourcetype", "index", "event", "fields"})


def hec(status: int, text: str, code: int, **more: Any) -> Answer:
    return json_answer(status, {"text": text, "code": code, **more})


class _Invalid(Exception):
    def __init__(self, answer: Answer) -> None:
        self.answer = answer


class SplunkHecFake(RecordingApp):
    def __init__(self, tokens: set[str] | None = None, *, ack: bool = False,
                 indexes: set[str] | None = None, max_content_length: int = 1_000_000) -> None:
        super().__init__()
        self.tokens: set[str] = set(tokens or ())
        self.disabled: set[str] = set()
        self.ack = ack
        #: Indexes the tokens may write to (None: any).
        self.indexes = indexes
        self.max_content_length = max_content_length
        self.busy = 0
        self.retry_after = 1
        self.refuse: Callable[[dict[str, Any]], bool] = lambda event: False
        self.ack_after = 0
        self.withhold_acks = False
        #: Every HEC object indexed, in order (repeats included), with its channel.
        self.indexed: list[dict[str, Any]] = []
        self._acks: dict[str, dict[int, int]] = {}  # channel -> ack id -> polls so far

    # -- what tests read ---------------------------------------------------------------------

    def events(self) -> list[dict[str, Any]]:
        """The envelopes indexed so far (``event`` of each HEC object)."""
        with self.lock:
            return [o["event"] for o in self.indexed]

    def event_ids(self) -> set[str]:
        return {str(e.get("id")) for e in self.events()}

    # -- HEC ---------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        route = path.split("?", 1)[0]
        if method != "POST" or route not in (*EVENT_PATHS, ACK_PATH):
            return json_answer(404, {"text": "The requested URL was not found on this server.",
                                     "code": 404})
        try:
            self._token(headers)
            channel = self._channel(headers)
            content = self._content(headers, body)
        except _Invalid as invalid:
            return invalid.answer
        if route == ACK_PATH:
            return self._ack_query(channel, content)
        if self.busy > 0:
            self.busy -= 1
            return json_answer(503, {"text": "Server is busy", "code": 9},
                               ("Retry-After", str(self.retry_after)))
        return self._events(channel, content)

    def _token(self, headers: dict[str, str]) -> str:
        authorization = headers.get("authorization")
        if authorization is None:
            raise _Invalid(hec(401, "Token is required", 2))
        scheme, _, token = authorization.partition(" ")
        if scheme != "Splunk" or not token:
            raise _Invalid(hec(401, "Invalid authorization", 3))
        if token in self.disabled:
            raise _Invalid(hec(403, "Token disabled", 1))
        if token not in self.tokens:
            raise _Invalid(hec(403, "Invalid token", 4))
        return token

    def _channel(self, headers: dict[str, str]) -> str | None:
        channel = headers.get("x-splunk-request-channel")
        if not self.ack:
            return channel
        if channel is None:
            raise _Invalid(hec(400, "Data channel is missing", 10))
        if not _GUID.fullmatch(channel):
            raise _Invalid(hec(400, "Invalid data channel", 11))
        return channel

    def _content(self, headers: dict[str, str], body: bytes) -> bytes:
        try:
            body = decoded_body(headers, body, encodings=("gzip",))
        except EncodingRefused:
            raise _Invalid(hec(400, "Invalid data format", 6)) from None
        if len(body) > self.max_content_length:
            raise _Invalid(json_answer(413, {"text": "Content length exceeded", "code": 6}))
        return body

    def _events(self, channel: str | None, content: bytes) -> Answer:
        if not content.strip():
            return hec(400, "No data", 5)
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            return hec(400, "Invalid data format", 6)
        decoder = json.JSONDecoder()
        position, number = 0, 0
        while True:
            while position < len(text) and text[position] in " \t\r\n":
                position += 1
            if position == len(text):
                break
            try:
                value, position = decoder.raw_decode(text, position)
            except ValueError:
                return hec(400, "Invalid data format", 6, **{"invalid-event-number": number})
            problem = self._problem(value)
            if problem is not None:
                return hec(400, problem[0], problem[1], **{"invalid-event-number": number})
            self.indexed.append({**value, "_channel": channel})
            number += 1
        if not self.ack:
            return hec(200, "Success", 0)
        acks = self._acks.setdefault(channel or "", {})
        ack_id = len(acks)
        acks[ack_id] = 0
        return hec(200, "Success", 0, ackId=ack_id)

    def _problem(self, value: object) -> tuple[str, int] | None:
        if not isinstance(value, dict):
            return "Invalid data format", 6
        if "event" not in value:
            return "Event field is required", 12
        event = value["event"]
        if event is None or event == "" or event == {}:
            return "Event field cannot be blank", 13
        if set(value) - _KEYS:
            return "Invalid data format", 6
        when = value.get("time")
        if when is not None and (not isinstance(when, int | float) or isinstance(when, bool)):
            return "Invalid data format", 6
        for name in ("host", "source", "sourcetype", "index"):
            if name in value and not isinstance(value[name], str):
                return "Invalid data format", 6
        if self.indexes is not None and value.get("index") is not None \
                and value["index"] not in self.indexes:
            return "Incorrect index", 7
        fields = value.get("fields")
        if fields is not None and not (isinstance(fields, dict) and all(
                _flat(v) for v in fields.values())):
            return "Error in handling indexed fields", 15
        if isinstance(event, dict) and self.refuse(event):
            return "Invalid data format", 6
        return None

    def _ack_query(self, channel: str | None, content: bytes) -> Answer:
        if not self.ack:
            return hec(400, "ACK is disabled", 14)
        try:
            asked = json.loads(content)["acks"]
            assert isinstance(asked, list)
            assert all(isinstance(i, int) for i in asked)
        except (ValueError, KeyError, TypeError, AssertionError):
            return hec(400, "Invalid data format", 6)
        known = self._acks.get(channel or "", {})
        answers: dict[str, bool] = {}
        for ack_id in asked:
            polls = known.get(ack_id)
            if polls is None:
                answers[str(ack_id)] = False
                continue
            known[ack_id] = polls + 1
            answers[str(ack_id)] = not self.withhold_acks and polls >= self.ack_after
        return json_answer(200, {"acks": answers})


def _flat(value: object) -> bool:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return True
    return isinstance(value, list) and all(isinstance(v, str | int | float) for v in value)
