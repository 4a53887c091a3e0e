"""``sumo_logic``: a Sumo Logic HTTP Logs and Metrics Source.

Written from Sumo Logic's documentation (read 2026-12-02):

- HTTP Logs and Metrics Source (the URL, payload size):
  https://help.sumologic.com/docs/send-data/hosted-collectors/http-source/logs-metrics/
  "a unique URL [...] securely encodes the Collector and Source information";
  "We recommend that the data payload of a POST request have a size, before
  compression, of 100KB to 1MB [...] up to but not exceeding 1MB of uncompressed
  data"; gzip or deflate recommended (``Content-Encoding``); the metadata headers
  ``X-Sumo-Category``, ``X-Sumo-Name``, ``X-Sumo-Host`` override the source's;
  a Content-Type that is not a metrics one means log data;
- Troubleshooting HTTP Sources (the answers):
  https://help.sumologic.com/docs/send-data/hosted-collectors/http-source/troubleshooting
  200 received; 401 "rejected due to missing or invalid URL token"; 408 "accepted, but
  timed out processing"; 429 quota-based throttling; 503 and 504 server issues;
- Generate a new URL for an HTTP Source: "Generating a new URL completely invalidates
  the old URL" (then, and once the source is deleted, the old URL gets 401).

The URL is the credential: it is kept encrypted and shown masked like every
destination URL, and never named beyond its origin in words or logs.

Requests: ``POST {url}``, the events one per line (NDJSON, each envelope's bytes as
produced), always gzip-compressed, at most 1 MB uncompressed (the batch is cut in
requests below it), with the options ``category``, ``source_name`` and
``source_host`` as ``X-Sumo-Category``, ``X-Sumo-Name`` and ``X-Sumo-Host``.

Answers: 2xx delivered. 401 (and 403/404, which a proxy or a deleted collector may
give) means Sumo does not know the URL: the source was deleted or its URL
regenerated. That is retried, not a stop, with words saying so: the docs give 401
for a missing or *invalid* token too, which a retry cannot tell from a deleted source,
and stopping would dead-letter every batch in flight while the owner pastes the new
URL. Retried, the batches wait in the retry tiers with the circuit open (one probe per
retry slot, nothing more is sent), the status shows the words, and they are delivered
once the URL is replaced; if the owner never does, the retry schedule's end disables
the destination (``failing``) and dead-letters them, as for any receiver that stays
down. 408: retry (Sumo may or may not have ingested it: at least once). 413: split.
429, 5xx: retry honouring ``Retry-After``. Anything else, or no answer: retry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, ClassVar
from urllib.parse import urlsplit

from pydantic import StringConstraints

from auditrelay.schemas.errors import InvalidInputError
from auditrelay.wire.client import Reply, status_error
from auditrelay.wire.kinds.base import Batch, Kind, KindOptions, Limits, Request, Target, Verdict

__all__ = ["MAX_BYTES", "SumoLogic", "SumoLogicOptions"]

#: Sumo's "up to but not exceeding 1MB of uncompressed data" per request.
MAX_BYTES = 1_000_000
_SOURCE_PATH = "/receiver/v1/http/"
_UNKNOWN_URL = (" Sumo Logic does not know this HTTP source URL: the source was deleted or "
                "its URL regenerated; put the source's current URL on the destination")

# Header values: no control characters (no header injection), kept short.
HeaderText = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]+$", max_length=1024)]


class SumoLogicOptions(KindOptions):
    #: ``X-Sumo-Category``: the source category (``_sourceCategory``) of the events.
    category: HeaderText | None = None
    #: ``X-Sumo-Name``: the source name (``_sourceName``).
    source_name: HeaderText | None = None
    #: ``X-Sumo-Host``: the source host (``_sourceHost``).
    source_host: HeaderText | None = None


class SumoLogic(Kind):
    name: ClassVar[str] = "sumo_logic"
    label: ClassVar[str] = "Sumo Logic"
    Options: ClassVar[type[KindOptions]] = SumoLogicOptions
    limits: ClassVar[Limits] = Limits(max_events=100, max_bytes=MAX_BYTES)
    content_type: ClassVar[str] = "application/x-ndjson"

    def check_url(self, url: str) -> str:
        parts = urlsplit(url)
        code = parts.path[len(_SOURCE_PATH):] if parts.path.startswith(_SOURCE_PATH) else ""
        if not code or "/" in code or parts.query or parts.fragment:
            # Never quote the URL: it is the credential.
            raise InvalidInputError(
                "url: a Sumo Logic destination's URL is the HTTP source's own address, "
                f"https://<endpoint>{_SOURCE_PATH}<code> (copy it from the source's "
                "settings in Sumo Logic)", field="url")
        return url

    def gzip(self, target: Target) -> bool:
        return True  # Sumo Logic recommends compressed uploads; there is no option

    def body(self, batch: Batch, target: Target, events: Sequence[int]) -> bytes:
        every = batch.events
        return b"".join(_line(every[i].raw) for i in events)

    def base_headers(self, target: Target, batch: Batch) -> dict[str, str]:
        headers = super().base_headers(target, batch)
        options = target.options
        assert isinstance(options, SumoLogicOptions)
        for header, value in (("X-Sumo-Category", options.category),
                              ("X-Sumo-Name", options.source_name),
                              ("X-Sumo-Host", options.source_host)):
            if value is not None:
                headers[header] = value
        return headers

    def read(self, reply: Reply, request: Request) -> Verdict:
        if reply.status is None:
            return Verdict("retry", reply.error)
        status = reply.status
        if 200 <= status < 300:
            return Verdict("delivered")
        if status in (401, 403, 404):
            return Verdict("retry", f"HTTP {status}:{_UNKNOWN_URL}")
        if status == 408:
            return Verdict("retry", "HTTP 408: Sumo Logic timed out processing the request; "
                                    "it is sent again")
        if status == 413:
            return Verdict("split", "HTTP 413: Sumo Logic refused the request as too large")
        if status == 429:
            return Verdict("retry", "HTTP 429: Sumo Logic is throttling this source "
                                    "(the account's ingestion quota)",
                           retry_after_seconds=reply.retry_after_seconds)
        if status >= 500:
            return Verdict("retry", f"HTTP {status}: Sumo Logic is unavailable",
                           retry_after_seconds=reply.retry_after_seconds)
        return Verdict("retry", status_error(status) or f"HTTP {status}",
                       retry_after_seconds=reply.retry_after_seconds)


def _line(raw: bytes) -> bytes:
    """One envelope as one line (envelopes are compact JSON; a stray newline would make
    Sumo see two messages)."""
    line = raw.strip()
    if b"\n" in line or b"\r" in line:
        line = line.replace(b"\r", b" ").replace(b"\n", b" ")  # JSON whitespace only
    return line + b"\n"
