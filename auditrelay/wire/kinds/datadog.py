"""``datadog_logs``: Datadog's HTTP logs intake (v2).

Vendor documentation (read 2026-12-02): "Send logs",
https://docs.datadoghq.com/api/latest/logs/send-logs/ (the site table, the limits,
the status codes), and Datadog's "Standard Attributes" page for ``usr.id`` and
``evt.name``. What it says and what this module does with it:

- **Where**: ``POST https://http-intake.logs.{site}/api/v2/logs``; the destination's
  ``url`` is the intake base of one documented site (:data:`SITES`, which the page
  offers as a list). Any other host is refused (422 naming ``url``), except an IP
  literal the operator allowed (``auditrelay.wire.kinds.loopback``).
- **Auth**: the ``DD-API-KEY`` header (credential ``api_key``).
- **Body**: a JSON array of log objects. Each carries ``message`` (the envelope as
  JSON text, exactly as produced), ``ddsource`` (default ``auditrelay``), and, when
  set, ``service``, ``ddtags`` and ``hostname``; the event's identifying fields go
  under ``audit`` (``id``, ``type``, ``source``, ``subject``, ``time``,
  ``workspaceid``, ``dataschema`` and extension attributes, which are scalars, then
  ``actor``, ``action``, ``target``) for facets, plus Datadog's
  standard ``usr.id`` and ``evt.name``. They are nested under ``audit`` because
  Datadog reserves ``source``, ``status``, ``host`` and ``service`` at the top level.
  ``metadata`` and ``description`` stay in ``message`` only (arbitrary keys would
  count against Datadog's attribute limits). No date attribute is sent: Datadog
  drops logs dated more than 18 hours back, and a batch retried for longer must still
  arrive; its intake time is used and ``audit.time`` keeps the event's.
- **Limits**: at most 1 000 entries and 5 MB uncompressed per request (5 000 000
  bytes here, the stricter reading); requests are cut to fit. A log above 1 MB is
  truncated by Datadog, never refused (ours are at most 64 KiB).
- **Compression**: always ``Content-Encoding: gzip``, as Datadog recommends (the
  contract's table has no option for it).
- **Answers**: 202 accepted; 400 (a payload Datadog cannot read) dead-letters the
  request's events with Datadog's words; 401 (key missing) and 403 (key invalid) are
  retried with "API key rejected" words until the key works again (a PATCH of the
  credentials); 413 splits the request in halves; 408, 429 (``Retry-After``
  honoured) and 5xx are retried. Error bodies are ``{"errors": [{"status", "title",
  "detail"}]}``; their ``detail`` (or ``title``) is quoted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import Field

from auditrelay.schemas.errors import InvalidInputError
from auditrelay.wire.client import Reply
from auditrelay.wire.kinds.base import (
    Batch,
    Credentials,
    Event,
    Kind,
    KindOptions,
    Limits,
    Request,
    Target,
    Verdict,
    answer_text,
    compact_json,
    json_answer,
)
from auditrelay.wire.kinds.loopback import operator_allowed_literal

__all__ = ["SITES", "Datadog", "DatadogOptions"]

#: Datadog's documented sites and their logs intake base URLs (the page's list).
SITES: dict[str, str] = {
    "datadoghq.com": "https://http-intake.logs.datadoghq.com",
    "us3.datadoghq.com": "https://http-intake.logs.us3.datadoghq.com",
    "us5.datadoghq.com": "https://http-intake.logs.us5.datadoghq.com",
    "datadoghq.eu": "https://http-intake.logs.datadoghq.eu",
    "ap1.datadoghq.com": "https://http-intake.logs.ap1.datadoghq.com",
    "ap2.datadoghq.com": "https://http-intake.logs.ap2.datadoghq.com",
    "uk1.datadoghq.com": "https://http-intake.logs.uk1.datadoghq.com",
    "ddog-gov.com": "https://http-intake.logs.ddog-gov.com",
    "us2.ddog-gov.com": "https://http-intake.logs.us2.ddog-gov.com",
}
_INTAKE_HOSTS = frozenset(urlsplit(url).hostname for url in SITES.values())
PATH = "/api/v2/logs"
#: Datadog's limits per request (uncompressed bytes: 5 MB read as 5 000 000).
MAX_ENTRIES = 1000
MAX_BYTES = 5_000_000
#: Top-level names of an envelope that are not ``audit`` attributes (the rest are:
#: ``id``, ``type``, ``source``, ``subject``, ``time``, ``workspaceid`` and extensions).
_NOT_AUDIT = ("specversion", "datacontenttype", "data")
_DATA_FIELDS = ("actor", "action", "target")
_KEY_REJECTED = "API key rejected"


class DatadogOptions(KindOptions):
    #: The ``service`` of every log (Datadog's unified service tagging).
    service: str | None = Field(default=None, min_length=1, max_length=100)
    #: The integration name of the logs (``source`` in Datadog).
    ddsource: str = Field(default="auditrelay", min_length=1, max_length=100)
    #: Tags, comma-separated ``key:value`` (``env:prod,team:sec``).
    ddtags: str | None = Field(default=None, min_length=1, max_length=1000,
                               pattern=r"^[^\s,]+(,[^\s,]+)*$")
    #: The ``host`` of every log.
    hostname: str | None = Field(default=None, min_length=1, max_length=255)


class Datadog(Kind):
    name: ClassVar[str] = "datadog_logs"
    label: ClassVar[str] = "Datadog"
    Options: ClassVar[type[KindOptions]] = DatadogOptions
    credentials: ClassVar[Credentials] = Credentials(("api_key",), (frozenset({"api_key"}),))
    limits: ClassVar[Limits] = Limits(max_events=MAX_ENTRIES, max_bytes=MAX_BYTES)

    def check_url(self, url: str) -> str:
        parts = urlsplit(url)
        if parts.path not in ("", "/") or parts.query:
            raise InvalidInputError(
                f"url: a Datadog intake URL has no path (requests go to {{url}}{PATH}); "
                f"use one of: {', '.join(SITES.values())}", field="url")
        base = f"{parts.scheme}://{parts.netloc}"
        if base in SITES.values() or operator_allowed_literal(url):
            return base
        raise InvalidInputError(
            f"url: not the logs intake of a Datadog site; use one of: "
            f"{', '.join(SITES.values())}", field="url")

    def url_of(self, target: Target) -> str:
        return target.url.rstrip("/") + PATH

    def gzip(self, target: Target) -> bool:
        return True

    def body(self, batch: Batch, target: Target, events: Sequence[int]) -> bytes:
        options = target.options
        assert isinstance(options, DatadogOptions)
        common: dict[str, Any] = {"ddsource": options.ddsource}
        for name in ("service", "ddtags", "hostname"):
            value = getattr(options, name)
            if value is not None:
                common[name] = value
        every = batch.events
        logs = [log_of(every[i], common) for i in events]
        return compact_json(logs)

    def base_headers(self, target: Target, batch: Batch) -> dict[str, str]:
        return {**super().base_headers(target, batch),
                "DD-API-KEY": target.credentials.get("api_key", "")}

    def read(self, reply: Reply, request: Request) -> Verdict:
        status = reply.status
        if status is None:
            return Verdict("retry", reply.error)
        if 200 <= status < 300:
            return Verdict("delivered")
        said = _said(reply)
        if status == 400:
            return Verdict("rejected", f"Datadog refused the logs as malformed (HTTP 400){said}")
        if status == 401:
            return Verdict("retry", f"{_KEY_REJECTED}: Datadog says the API key is missing "
                                    f"(HTTP 401){said}")
        if status == 403:
            return Verdict("retry", f"{_KEY_REJECTED}: Datadog refused the API key (HTTP 403); "
                                    "replace it in the destination's credentials")
        if status == 413:
            return Verdict("split", f"Datadog found the request too large (HTTP 413){said}")
        if status == 429:
            return Verdict("retry", "Datadog is rate limiting the logs intake (HTTP 429)",
                           retry_after_seconds=reply.retry_after_seconds)
        return Verdict("retry", f"Datadog answered HTTP {status}{said}",
                       retry_after_seconds=reply.retry_after_seconds)

    def accepted_words(self, events: int) -> str:
        return "Datadog accepted the log" if events == 1 else f"Datadog accepted {events} logs"


def log_of(event: Event, common: Mapping[str, Any]) -> dict[str, Any]:
    """One Datadog log object for ``event`` (see the module docstring)."""
    # Once per event at full speed: a copy of the envelope's top level in C, then only
    # what it must lose or gain.
    data = event.data
    audit = data.copy()
    for name in _NOT_AUDIT:
        audit.pop(name, None)
    log: dict[str, Any] = {**common, "message": event.raw.decode("utf-8"), "audit": audit}
    inner = data.get("data")
    if isinstance(inner, dict):
        for name in _DATA_FIELDS:
            value = inner.get(name)
            if value is not None:
                audit[name] = value
        actor = inner.get("actor")
        if isinstance(actor, dict) and isinstance(user := actor.get("id"), str):
            log["usr"] = {"id": user}
    kind = data.get("type")
    if isinstance(kind, str):
        log["evt"] = {"name": kind}
    return log


def _said(reply: Reply) -> str:
    """``: <Datadog's detail>`` from an error body, or the body's start, or nothing."""
    errors = json_answer(reply).get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
        text = first.get("detail") or first.get("title")
        if isinstance(text, str) and text:
            return f": {' '.join(text.split())[:200]}"
    text = answer_text(reply)
    return f": {text}" if text and text != "{}" else ""
