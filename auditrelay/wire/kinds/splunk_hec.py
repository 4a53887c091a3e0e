"""``splunk_hec``: Splunk's HTTP Event Collector (HEC), JSON event protocol.

Written from Splunk's documentation (read 2026-12-02):

- Format events for HEC, and the event endpoint's reference:
  https://help.splunk.com/en/splunk-enterprise/get-data-in/collect-http-event-data/http-event-collector-rest-api-endpoints
  (``services/collector/event``, ``services/collector/ack``);
- the HEC status codes ("Troubleshoot HTTP Event Collector", the table of ``code``,
  HTTP status and text):
  https://help.splunk.com/en/splunk-enterprise/get-data-in/collect-http-event-data/troubleshoot-http-event-collector
  (the page as stored here did not show the table; the codes below are the ones
  Splunk's table gives, as also reproduced by Splunk's admin tooling and by
  fluent-bit's HEC input: 0 Success; 1 Token disabled, 4 Invalid token (403);
  2 Token is required, 3 Invalid authorization (401); 5 No data, 6 Invalid data
  format, 7 Incorrect index, 10 Data channel is missing, 11 Invalid data channel,
  12 Event field is required, 13 Event field cannot be blank, 14 ACK is disabled,
  15 Error in handling indexed fields, 16 Query string authorization is not enabled
  (400); 8 Internal server error (500); 9 Server is busy (503));
- indexer acknowledgement ("About HTTP Event Collector Indexer Acknowledgment"):
  https://docs.splunk.com/Documentation/Splunk/9.3.0/Data/AboutHECIDXAck
  (a request carries a channel, ``X-Splunk-Request-Channel``, a GUID; the answer
  carries an ``ackId``; ``POST /services/collector/ack`` with ``{"acks": [id]}`` on
  the same channel answers ``{"acks": {"id": true|false}}``).

Requests: ``POST {url}/services/collector/event``, ``Authorization: Splunk {token}``;
the body is one HEC object per event, one after the other (whitespace between, as
HEC's batch format allows): ``{"time": <epoch seconds, milliseconds>, "host",
"source", "sourcetype" (default ``_json``), "index", "fields": {"type",
"category", "workspace"}, "event": <the CloudEvents envelope, its bytes as
produced>}``. ``fields`` are indexed fields (flat strings), so that searches can
filter by ``type::...`` without reading the events. With ``gzip`` the body goes
compressed (``Content-Encoding: gzip``). HEC's default ``max_content_length`` is
1 MB: requests stay below (a 413 splits them).

Answers (``read``):

- 2xx: delivered. With ``ack`` on and an ``ackId`` in the answer, the events count as
  delivered only once ``/services/collector/ack`` says so: asked after 0.25 s, then
  with the wait doubled (at most 2 s), for at most 10 s; never confirmed, or the
  query refused, and the request is sent again (retry: at least once; HEC's
  duplicates are the receiver's business). Without an ``ackId`` (the token does not
  use acknowledgement) the 200 is final.
- 401/403, codes 1-4: retry, "token rejected by Splunk HEC" (the owner replaces the
  token; the batches wait, nothing is lost).
- 400, codes 5, 6, 12, 13, 15: the events can never be accepted. With
  ``invalid-event-number`` N the event N is dead-lettered with HEC's words and the
  other events of the request are sent again (HEC may have indexed the ones before
  N; at least once); without it the whole request is dead-lettered.
- 400 with codes 7, 10, 11, 14, 16 (the index, the channel or acknowledgement do not
  match the token's settings: a configuration to fix, not bad events): retry, in
  words.
- 413: split. 429, 503 (code 9 "Server is busy") and other 5xx: retry honouring
  ``Retry-After``. Anything else, or no answer: retry.

Words never hold the token; HEC's ``text`` is quoted at most 200 characters.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import StringConstraints

from auditrelay.schemas.errors import InvalidInputError
from auditrelay.wire.client import Reply, status_error
from auditrelay.wire.kinds.base import (
    Batch,
    Credentials,
    Event,
    FollowUp,
    Kind,
    KindOptions,
    Limits,
    Request,
    Target,
    Verdict,
    compact_json,
    json_answer,
)

__all__ = ["ACK_WAIT_SECONDS", "HecRequest", "SplunkHec", "SplunkHecOptions"]

EVENT_PATH = "/services/collector/event"
ACK_PATH = "/services/collector/ack"
#: How long indexing is waited for, at most, before the request is sent again.
ACK_WAIT_SECONDS = 10.0
_ACK_FIRST_DELAY = 0.25
_ACK_MAX_DELAY = 2.0
_TEXT_CHARS = 200
#: One channel per destination per worker process (HEC wants a GUID per client).
_CHANNEL_NAMESPACE = uuid.uuid4()
_TOKEN_CODES = frozenset({1, 2, 3, 4})
#: 400s saying the events themselves can never be accepted.
_BAD_EVENT_CODES = frozenset({5, 6, 12, 13, 15})

# Splunk: index names are lower case letters, digits, "_" and "-", not starting with
# "_" or "-"; metadata values are free text, but they travel in JSON only.
IndexName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]*$",
                                             max_length=80)]
MetaText = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]+$", max_length=256)]


class SplunkHecOptions(KindOptions):
    #: The index events go to (one the token may write to); the token's default if unset.
    index: IndexName | None = None
    source: MetaText | None = None
    sourcetype: MetaText = "_json"
    host: MetaText | None = None
    #: Send the body gzip-compressed.
    gzip: bool = False
    #: Wait for indexer acknowledgement (the token must have it turned on).
    ack: bool = False


@dataclass(frozen=True, slots=True)
class HecRequest(Request):
    """A request to HEC and, with ``ack`` on, how to ask about its acknowledgement."""

    ack_url: str | None = field(default=None, repr=False)
    ack_headers: Mapping[str, str] = field(default_factory=dict, repr=False)


class SplunkHec(Kind):
    name: ClassVar[str] = "splunk_hec"
    label: ClassVar[str] = "Splunk HEC"
    Options: ClassVar[type[KindOptions]] = SplunkHecOptions
    credentials: ClassVar[Credentials] = Credentials(("token",), (frozenset({"token"}),))
    limits: ClassVar[Limits] = Limits(max_events=100, max_bytes=1_000_000)
    content_type: ClassVar[str] = "application/json"

    # -- fields ----------------------------------------------------------------------------

    def check_url(self, url: str) -> str:
        parts = urlsplit(url)
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise InvalidInputError(
                "url: a Splunk HEC URL is the collector's base, such as "
                "https://splunk.example.com:8088, without a path or query (auditrelay "
                f"sends to {EVENT_PATH})", field="url")
        return urlunsplit((parts.scheme, parts.netloc, "", "", ""))

    # -- requests --------------------------------------------------------------------------

    def url_of(self, target: Target) -> str:
        return target.url.rstrip("/") + EVENT_PATH

    def body(self, batch: Batch, target: Target, events: Sequence[int]) -> bytes:
        options = _options(target)
        every = batch.events
        static = _static_meta(options)
        return b"\n".join(hec_object(every[i], static) for i in events)

    def base_headers(self, target: Target, batch: Batch) -> dict[str, str]:
        headers = {**super().base_headers(target, batch), **_auth(target)}
        if _options(target).ack:
            headers["X-Splunk-Request-Channel"] = channel_of(target)
        return headers

    def request(self, batch: Batch, target: Target, events: tuple[int, ...],
                body: bytes) -> Request:
        plain = super().request(batch, target, events, body)
        if not _options(target).ack:
            return HecRequest(plain.url, plain.body, plain.headers, plain.events)
        ack_headers = {"User-Agent": f"auditrelay/{target.version}",
                       "Content-Type": "application/json", **_auth(target),
                       "X-Splunk-Request-Channel": channel_of(target)}
        return HecRequest(plain.url, plain.body, plain.headers, plain.events,
                          ack_url=target.url.rstrip("/") + ACK_PATH, ack_headers=ack_headers)

    # -- answers ---------------------------------------------------------------------------

    def read(self, reply: Reply, request: Request) -> Verdict:
        if reply.status is None:
            return Verdict("retry", reply.error)
        status = reply.status
        answer = json_answer(reply)
        code = answer.get("code") if isinstance(answer.get("code"), int) else None
        said = _said(answer, code, status)
        if 200 <= status < 300:
            ack_id = answer.get("ackId")
            if isinstance(request, HecRequest) and request.ack_url is not None \
                    and isinstance(ack_id, int) and not isinstance(ack_id, bool):
                return Verdict("delivered", follow_up=FollowUp(
                    HecRequest(request.ack_url, json.dumps({"acks": [ack_id]}).encode(),
                               request.ack_headers, request.events),
                    delay_seconds=_ACK_FIRST_DELAY, state=ack_id))
            return Verdict("delivered")
        if status in (401, 403) or code in _TOKEN_CODES:
            return Verdict("retry", f"token rejected by Splunk HEC: {said}")
        if status == 413:
            return Verdict("split", f"Splunk HEC refused the request as too large: {said}")
        if status == 400 and code in _BAD_EVENT_CODES:
            return _refused(answer, said, request)
        if status == 400:
            return Verdict("retry", f"Splunk HEC refused the request: {said}"
                                    f"{_HINTS.get(code or -1, '')}")
        if status == 503 or code == 9:
            return Verdict("retry", f"Splunk HEC is busy: {said}",
                           retry_after_seconds=reply.retry_after_seconds)
        return Verdict("retry", f"Splunk HEC answered {said}",
                       retry_after_seconds=reply.retry_after_seconds)

    def read_follow_up(self, reply: Reply, follow_up: FollowUp, request: Request) -> Verdict:
        ack_id = follow_up.state
        waited = follow_up.waited_seconds + follow_up.delay_seconds
        if reply.status is not None and 200 <= reply.status < 300:
            acks = json_answer(reply).get("acks")
            if isinstance(acks, dict) and acks.get(str(ack_id)) is True:
                return Verdict("delivered")
        elif reply.status is not None and reply.status < 500 and reply.status != 429:
            said = _said(json_answer(reply), None, reply.status)
            return Verdict("retry", "Splunk HEC refused the indexer acknowledgement query: "
                                    f"{said}; the events are sent again")
        delay = min(follow_up.delay_seconds * 2, _ACK_MAX_DELAY)
        if waited + delay > ACK_WAIT_SECONDS:
            return Verdict("retry", f"Splunk HEC did not confirm indexing within "
                                    f"{ACK_WAIT_SECONDS:g} s (indexer acknowledgement); "
                                    "the events are sent again")
        return Verdict("delivered", follow_up=FollowUp(follow_up.request, delay_seconds=delay,
                                                       waited_seconds=waited, state=ack_id))


_HINTS: dict[int, str] = {
    7: "; the token may not write to this index (check the option index)",
    10: "; the token uses indexer acknowledgement: turn the option ack on",
    11: "; the token uses indexer acknowledgement: turn the option ack on",
    14: "; the token does not use indexer acknowledgement: turn the option ack off",
}


def _options(target: Target) -> SplunkHecOptions:
    options = target.options
    assert isinstance(options, SplunkHecOptions)
    return options


def _auth(target: Target) -> dict[str, str]:
    return {"Authorization": f"Splunk {target.credentials.get('token', '')}"}


def channel_of(target: Target) -> str:
    """The destination's HEC channel in this process: a GUID, stable per destination."""
    return str(uuid.uuid5(_CHANNEL_NAMESPACE, target.config.id))


def hec_object(event: Event, static: Mapping[str, str]) -> bytes:
    """One event as a HEC object, with a destination's ``static`` metadata (host, source,
    sourcetype, index); the envelope's bytes are kept as produced."""
    meta: dict[str, Any] = {}
    data = event.data
    seconds = epoch_seconds(data.get("time"))
    if seconds is not None:
        meta["time"] = seconds
    meta.update(static)
    fields = {"type": data.get("type"), "category": _category(data),
              "workspace": data.get("workspaceid")}
    meta["fields"] = {k: v for k, v in fields.items() if isinstance(v, str) and v}
    return compact_json(meta)[:-1] + b',"event":' + event.raw.strip() + b"}"


def _static_meta(options: SplunkHecOptions) -> dict[str, str]:
    """The HEC metadata every event of a destination carries."""
    return {name: value for name in ("host", "source", "sourcetype", "index")
            if (value := getattr(options, name)) is not None}


def epoch_seconds(value: object) -> float | None:
    """An RFC 3339 time as Unix seconds with milliseconds (HEC's ``time``), or None."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return round(moment.timestamp(), 3)


def _category(data: Mapping[str, Any]) -> str | None:
    inner = data.get("data")
    action = inner.get("action") if isinstance(inner, dict) else None
    category = action.get("category") if isinstance(action, dict) else None
    if isinstance(category, str):
        return category
    kind = data.get("type")
    if isinstance(kind, str) and kind.count(".") >= 2:
        return kind.rsplit(".", 2)[-2]
    return None


def _said(answer: Mapping[str, Any], code: int | None, status: int) -> str:
    """HEC's answer in words: its text and code, or the HTTP status."""
    text = answer.get("text")
    if isinstance(text, str) and text.strip():
        words = " ".join(text.split())[:_TEXT_CHARS]
        return f"{words} (HTTP {status}, code {code})" if code is not None \
            else f"{words} (HTTP {status})"
    return status_error(status) or f"HTTP {status}"


def _refused(answer: Mapping[str, Any], said: str, request: Request) -> Verdict:
    """A 400 refusing events: the one HEC names dead-lettered, the others sent again."""
    number = answer.get("invalid-event-number")
    count = len(request.events)
    if isinstance(number, int) and not isinstance(number, bool) and 0 <= number < count \
            and count > 1:
        others = tuple(i for i in range(count) if i != number)
        return Verdict("delivered",
                       f"Splunk HEC refused event {number} of {count}: {said}; "
                       "the others are sent again",
                       retry_items=others,
                       rejected_items=((number, f"Splunk HEC refused the event: {said}"),))
    return Verdict("rejected", f"Splunk HEC refused the events: {said}")
