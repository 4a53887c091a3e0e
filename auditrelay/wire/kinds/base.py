"""What every destination kind implements (contract section 5.1).

A kind decides four things about its destinations; everything else (routing,
filters, ordering, retry tiers, circuit breaker, dead letters, status, the
SSRF-safe client, test sends, the page) is shared:

- **fields**: its ``Options`` model (non-secret, validated by pydantic, unknown
  names refused), its credential names, and what its URL must look like;
- **requests**: the body, headers and auth of the requests carrying a batch,
  within its :class:`Limits` (events and bytes per request, pace);
- **answers**: how each reply is read, as a :class:`Verdict`: delivered (maybe
  with items to send again or refused), split (too large: halve and resend),
  rejected (never acceptable: dead letter), retry, or stop (disable); a verdict may
  first ask for a follow-up request (Splunk's indexer acknowledgement);
- **words**: what the status and a test send say about it.

A kind is one module with one :class:`Kind` subclass, registered in
``auditrelay.wire.kinds``. Pure: no I/O (``auditrelay.wire.kinds.send`` sends).
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

import orjson
from pydantic import BaseModel, ConfigDict

from auditrelay.schemas.destinations import DestinationConfig
from auditrelay.schemas.errors import InvalidInputError
from auditrelay.wire.client import Reply

__all__ = [
    "Batch",
    "Credentials",
    "Event",
    "FollowUp",
    "Kind",
    "KindOptions",
    "Limits",
    "Request",
    "Target",
    "Verdict",
    "answer_text",
    "compact_json",
]

#: Longest credential value accepted (a Datadog key is 32 characters, an API key of
#: Elasticsearch about 100; JWTs and such stay well below).
MAX_CREDENTIAL_CHARS = 4096
_CREDENTIAL_VALUE = re.compile(r"[\x21-\x7e]+")
# Level 1: a quarter of level 6's CPU for bodies about 14 % larger (100 audit events,
# docs/performance.md); the worker's CPU is what limits a destination, not bandwidth.
_GZIP_LEVEL = 1
_ANSWER_CHARS = 200


class KindOptions(BaseModel):
    """A kind's options: non-secret, shown in reads; unknown names are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Credentials:
    """The credential names a kind takes; ``required`` lists the sets of which one must
    be complete (Elasticsearch: ``api_key``, or ``username`` and ``password``)."""

    names: tuple[str, ...] = ()
    required: tuple[frozenset[str], ...] = ()

    def check(self, given: Mapping[str, str], kind: str) -> dict[str, str]:
        """A plain copy of ``given`` if it names only known credentials, with valid
        values, and completes a required set; else ``InvalidInputError`` naming the field.
        Messages never contain a value."""
        for name, value in given.items():
            if name not in self.names:
                known = ", ".join(self.names) or "none"
                raise InvalidInputError(
                    f"credentials.{name[:40]}: a {kind} destination takes no such credential "
                    f"(it takes: {known})", field=f"credentials.{name[:40]}")
            if not isinstance(value, str) or not 0 < len(value) <= MAX_CREDENTIAL_CHARS \
                    or not _CREDENTIAL_VALUE.fullmatch(value):
                raise InvalidInputError(
                    f"credentials.{name}: must be 1 to {MAX_CREDENTIAL_CHARS} visible ASCII "
                    "characters, without spaces", field=f"credentials.{name}")
        if self.required and not any(needed <= given.keys() for needed in self.required):
            sets = " or ".join(" and ".join(sorted(needed)) for needed in self.required)
            missing = sorted(self.required[0] - given.keys())[0]
            raise InvalidInputError(f"credentials.{missing}: a {kind} destination needs {sets}",
                                    field=f"credentials.{missing}")
        return dict(given)


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds of one request, and the pace of requests to one destination."""

    #: Events per request at most.
    max_events: int = 100
    #: Bytes of (uncompressed) body per request at most; None: no limit of the receiver.
    max_bytes: int | None = None
    #: Seconds between two requests to one destination at least (Slack: 1).
    min_interval_seconds: float = 0.0


class Event:
    """One envelope of a batch: its bytes exactly as produced, and (parsed on first use)
    its JSON object."""

    __slots__ = ("_data", "raw")

    def __init__(self, raw: bytes, data: dict[str, Any] | None = None) -> None:
        self.raw = raw
        self._data = data

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            parsed = json.loads(self.raw)
            self._data = parsed if isinstance(parsed, dict) else {}
        return self._data

    def field(self, *path: str) -> Any:
        """``data[path[0]][path[1]]...``, or None where a step is missing."""
        value: Any = self.data
        for step in path:
            if not isinstance(value, dict):
                return None
            value = value.get(step)
        return value


class Batch:
    """A batch's body (a JSON array of ``count`` envelopes), split into events on first
    use: a kind that sends the body as it is never parses it."""

    def __init__(self, body: bytes, batch_id: str, workspace_id: str, count: int) -> None:
        self.body = body
        self.batch_id = batch_id
        self.workspace_id = workspace_id
        self.count = count
        self._events: list[Event] | None = None

    @property
    def events(self) -> list[Event]:
        if self._events is None:
            self._events = _split(self.body)
            self.count = len(self._events)
        return self._events

    def part(self, indices: Sequence[int]) -> bytes:
        """The events at ``indices`` as a batch body of their own (their bytes kept)."""
        events = self.events
        return b"[" + b",".join(events[i].raw for i in indices) + b"]"


def _split(body: bytes) -> list[Event]:
    """The events of a JSON array, each with its own bytes."""
    return _split_canonical(body) or _split_spans(body)


def _split_canonical(body: bytes) -> list[Event] | None:
    """The events of a body whose every envelope is in the canonical form (compact,
    UTF-8, as ``auditrelay.schemas.builder`` writes it and orjson writes it again), or
    None.

    Parsing the whole array in C and encoding each value again is about three times as
    fast as the decoder's spans; the bytes comparison makes it exact: any envelope
    written otherwise (spaces, escapes, another float form) sends the body the slow way.
    """
    try:
        values = orjson.loads(body)
        if not isinstance(values, list) or not values:
            return None
        raws = [orjson.dumps(value) for value in values]
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None
    if b"[" + b",".join(raws) + b"]" != body:
        return None
    return [Event(raw, value if isinstance(value, dict) else {})
            for raw, value in zip(raws, values, strict=True)]


def _split_spans(body: bytes) -> list[Event]:
    """The events of any JSON array, each with its own bytes (a decoder's spans)."""
    text = body.decode("utf-8")
    decoder = json.JSONDecoder()
    position = _skip_space(text, 0)
    if text[position:position + 1] != "[":
        raise ValueError("a batch body is a JSON array")
    position = _skip_space(text, position + 1)
    events: list[Event] = []
    if text[position:position + 1] == "]":
        return events
    while True:
        value, end = decoder.raw_decode(text, position)
        events.append(Event(text[position:end].encode("utf-8"),
                            value if isinstance(value, dict) else {}))
        position = _skip_space(text, end)
        separator = text[position:position + 1]
        if separator == "]":
            return events
        if separator != ",":
            raise ValueError("a batch body is a JSON array of objects")
        position = _skip_space(text, position + 1)


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


@dataclass(frozen=True, slots=True)
class Target:
    """A destination as one attempt sees it: its record, URL, options and credentials
    decrypted and validated. Built per attempt; never logged (it holds secrets)."""

    config: DestinationConfig
    url: str = field(repr=False)
    options: KindOptions
    credentials: Mapping[str, str] = field(repr=False)
    #: The destination's custom headers (contract section 2), decrypted.
    custom_headers: Mapping[str, str] = field(repr=False)
    #: The webhook signing secrets valid at a moment (``signing.signing_secrets``).
    secrets: Callable[[datetime], list[str]] = field(repr=False)
    #: The moment a request is sent (asked again at the send, not at the encoding).
    now: Callable[[], datetime]
    version: str


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP POST of (some of) a batch."""

    url: str = field(repr=False)
    body: bytes = field(repr=False)
    #: A function when the headers are made at the send (a signature's timestamp).
    headers: Mapping[str, str] | Callable[[], Mapping[str, str]] = field(repr=False)
    #: Indices of the batch's events it carries.
    events: tuple[int, ...]


Outcome = Literal["delivered", "split", "rejected", "retry", "stop"]


@dataclass(frozen=True, slots=True)
class FollowUp:
    """A request a reply asks for before its verdict holds: Splunk HEC's indexer
    acknowledgement, where the events were taken and their indexing is confirmed by
    asking again. Sent ``delay_seconds`` after the reply; its reply is read by
    :meth:`Kind.read_follow_up`, whose verdict is the request's (and may ask again).
    The kind bounds the asking (``waited_seconds`` and ``state`` are its own); the
    sender caps it too (``auditrelay.wire.kinds.send``)."""

    request: Request
    delay_seconds: float = 0.0
    #: Seconds waited for this request's verdict so far (before this delay).
    waited_seconds: float = 0.0
    #: What the kind needs to read the reply (Splunk: the ack id).
    state: Any = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """How one reply is read.

    - ``delivered``: taken; ``retry_items`` (positions in the request's events) are to
      send again, ``rejected_items`` (position, reason) refused for good;
    - ``split``: too large; halve it and send the halves now (one event: rejected);
    - ``rejected``: every event refused for good (dead letter, with ``words``);
    - ``retry``: nothing taken; the batch goes to a retry tier (``retry_after_seconds``
      honoured);
    - ``stop``: the destination must be disabled (``words`` say why).

    With ``follow_up`` the verdict is not final: the follow-up request is sent, and
    the verdict of its reply (:meth:`Kind.read_follow_up`) replaces this one.
    """

    outcome: Outcome
    #: What the status, an attempt record and a test send say, in words.
    words: str | None = None
    retry_after_seconds: float | None = None
    retry_items: tuple[int, ...] = ()
    rejected_items: tuple[tuple[int, str], ...] = ()
    follow_up: FollowUp | None = None


class Kind:
    """A destination kind; subclasses set the class attributes and implement
    :meth:`url_of`, :meth:`body` and :meth:`read` (and :meth:`headers` for auth)."""

    name: ClassVar[str]
    #: What the page and messages call it ("Splunk HEC").
    label: ClassVar[str]
    Options: ClassVar[type[KindOptions]] = KindOptions
    credentials: ClassVar[Credentials] = Credentials()
    limits: ClassVar[Limits] = Limits()
    #: Categories a new destination of this kind is filtered on when none are given.
    default_categories: ClassVar[tuple[str, ...]] = ()
    #: The content type of :meth:`body`.
    content_type: ClassVar[str] = "application/json"
    # How the settings page asks for the URL (``auditrelay.api.web_support``); the
    # defaults give a free text field labelled "URL" with the generic help.
    #: (label, url) pairs: the page offers a list instead of a text field (Datadog's sites).
    url_choices: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: The URL field's label and help on the page; empty: "URL" and the generic help.
    url_label: ClassVar[str] = ""
    url_hint_text: ClassVar[str] = ""
    #: The URL is the credential (Slack, Sumo Logic): the page never shows it back, not
    #: even in a refused form.
    url_secret: ClassVar[bool] = False

    # -- fields ----------------------------------------------------------------------------

    def check_url(self, url: str) -> str:
        """``url`` (already past the SSRF rules), as the destination keeps it, or
        ``InvalidInputError(field="url")`` when this kind cannot use it."""
        return url

    def options(self, raw: Mapping[str, Any]) -> KindOptions:
        return self.Options.model_validate(dict(raw))

    # -- requests --------------------------------------------------------------------------

    def url_of(self, target: Target) -> str:
        """Where requests go (the base URL plus the kind's path)."""
        return target.url

    def body(self, batch: Batch, target: Target, events: Sequence[int]) -> bytes:
        """The uncompressed body carrying the events at ``events``."""
        raise NotImplementedError

    def headers(self, target: Target, batch: Batch, body: bytes,
                ) -> Mapping[str, str] | Callable[[], Mapping[str, str]]:
        """The headers of a request with the uncompressed ``body``: custom headers, then
        the kind's (auth included), which custom headers may not name."""
        return {**target.custom_headers, **self.base_headers(target, batch)}

    def base_headers(self, target: Target, batch: Batch) -> dict[str, str]:
        return {"User-Agent": f"auditrelay/{target.version}",
                "Content-Type": self.content_type,
                "X-Webhook-Id": batch.batch_id}

    def gzip(self, target: Target) -> bool:
        return bool(getattr(target.options, "gzip", False))

    def requests(self, batch: Batch, target: Target, events: Sequence[int]) -> list[Request]:
        """Requests carrying ``events``, each within :attr:`limits`."""
        return [self.request(batch, target, chunk, body)
                for chunk, body in self._chunks(batch, target, tuple(events))]

    def request(self, batch: Batch, target: Target, events: tuple[int, ...],
                body: bytes) -> Request:
        headers = self.headers(target, batch, body)
        if self.gzip(target):
            body = gzip.compress(body, compresslevel=_GZIP_LEVEL, mtime=0)
            headers = _with_encoding(headers)
        return Request(self.url_of(target), body, headers, events)

    def _chunks(self, batch: Batch, target: Target,
                events: tuple[int, ...]) -> Iterator[tuple[tuple[int, ...], bytes]]:
        step = self.limits.max_events
        for start in range(0, len(events), step):
            yield from self._fitted(batch, target, events[start:start + step])

    def _fitted(self, batch: Batch, target: Target,
                events: tuple[int, ...]) -> Iterator[tuple[tuple[int, ...], bytes]]:
        body = self.body(batch, target, events)
        cap = self.limits.max_bytes
        if cap is None or len(body) <= cap or len(events) == 1:
            # One event too large for the receiver is sent anyway: its answer (413, 400)
            # dead-letters it with the receiver's words.
            yield events, body
            return
        half = len(events) // 2
        yield from self._fitted(batch, target, events[:half])
        yield from self._fitted(batch, target, events[half:])

    # -- answers ---------------------------------------------------------------------------

    def read(self, reply: Reply, request: Request) -> Verdict:
        raise NotImplementedError

    def read_follow_up(self, reply: Reply, follow_up: FollowUp, request: Request) -> Verdict:
        """The verdict on ``request`` once ``follow_up`` (which :meth:`read` or an earlier
        call asked for) got ``reply``. Only kinds that ask for follow-ups implement it."""
        raise NotImplementedError(f"{self.name} asks for no follow-up requests")

    def accepted_words(self, events: int) -> str:
        """What a test send says when the receiver took it."""
        return f"{self.label} accepted the event" if events == 1 else \
            f"{self.label} accepted {events} events"


def _with_encoding(headers: Mapping[str, str] | Callable[[], Mapping[str, str]],
                   ) -> Mapping[str, str] | Callable[[], Mapping[str, str]]:
    if callable(headers):
        make = headers
        return lambda: {**make(), "Content-Encoding": "gzip"}
    return {**headers, "Content-Encoding": "gzip"}


def compact_json(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON (the canonical form's separators), by orjson; the
    standard encoder takes what orjson refuses (integers beyond 64 bits, say)."""
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def answer_text(reply: Reply) -> str:
    """The start of a reply's body as one line of text, for words (never a request's)."""
    text = reply.body[:_ANSWER_CHARS * 2].decode("utf-8", "replace")
    text = " ".join(text.split())
    return text if len(text) <= _ANSWER_CHARS else text[:_ANSWER_CHARS - 3] + "..."


def json_answer(reply: Reply) -> dict[str, Any]:
    """The reply's body as a JSON object, or ``{}`` when it is not one (or was capped)."""
    try:
        value = json.loads(reply.body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}
