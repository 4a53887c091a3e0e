"""``elasticsearch``: an Elasticsearch (or OpenSearch) index or data stream, through the
``_bulk`` API, exactly once in the index although deliveries are at least once.

Consumes a batch of CloudEvents envelopes; produces one ``POST {url}/_bulk`` request
(``application/x-ndjson``): per event a ``create`` action line naming the index
(``options.index``) and ``_id`` = the CloudEvents ``id``, then the envelope itself as
the document, with ``@timestamp`` (the event's ``time``) put first, which data streams
require and Kibana uses as the time field. Every line ends with a newline, the last
one included, as the bulk API requires.

Why ``create`` with ``_id``: a document with that id already in the index makes the
item fail with 409 ``version_conflict_engine_exception``, so an event delivered again
(a retry after a timeout, a worker killed after sending) is a harmless conflict, read
as delivered. The index holds each event once. (In a data stream the check is per
backing index: an event sent again after a rollover can be stored twice.)

Auth (``Authorization``): ``ApiKey <encoded>`` from the credential ``api_key``, the
*encoded* value Elasticsearch shows when the key is created (base64 of ``id:api_key``;
a value given as ``id:api_key`` is encoded here), or ``Basic`` from ``username`` and
``password``.

Answers (the bulk API answers 200 even when items failed, with ``errors: true`` and a
``status`` and ``error.type``/``error.reason`` per item, in the order of the actions).
The request carries ``filter_path=errors,items.*.status,items.*.error.type,
items.*.error.reason`` so that the answer to 100 items stays far below the 64 KiB the
client reads (about 2.6 KB when all are created). Error answers are not filtered by
Elasticsearch.

- per item: 2xx, or 409 (already there): delivered; 429 (``es_rejected_execution_
  exception``), 408, 5xx, 401/403 (credentials, privileges, a read-only block) and 404
  (``index_not_found_exception``: the index does not exist and automatic creation is
  off) and a closed index: sent again, alone, in the same batch id; any other 4xx (400
  ``document_parsing_exception``/``mapper_parsing_exception``, a mapping error): refused
  for good, dead-lettered with Elasticsearch's words, the rest delivered;
- whole request: 401 ``Elasticsearch rejected the credentials``, 403, 408, 429, 5xx:
  retried (``Retry-After`` honoured); 413: split in halves; 400 (the request can never
  be taken as it is): dead-lettered with the words; any other status: retried;
- a 2xx answer that cannot be read (a proxy's page, an answer larger than 64 KiB):
  split, since ``create`` makes sending again harmless; one event: retried.

Reasons quoted in words never name a user or an API key (``user [...]`` is masked).

OpenSearch: the same ``_bulk`` API, answers and index rules; it has no API keys
(``Authorization: ApiKey`` is Elasticsearch's), so use ``username`` + ``password``
(HTTP Basic, the security plugin's internal users). Amazon OpenSearch Service domains
that require SigV4-signed requests are not supported (only fine-grained access control
with the internal user database, which takes Basic).

Vendor documentation read (December 2026, through the docs search):
- Bulk API: https://www.elastic.co/guide/en/elasticsearch/reference/7.6/docs-bulk.html
  and the current description in the client reference,
  https://elastic.co/docs/reference/elasticsearch/clients/javascript/api-reference
  (NDJSON, final newline, ``create`` fails if the document exists, per-item results,
  the ``create_doc``/``auto_configure`` privileges); the current API page
  (https://www.elastic.co/docs/api/doc/elasticsearch/operation/operation-bulk) was not
  reachable from here, so the per-item answer's shape follows those pages;
- index names: https://www.elastic.co/guide/en/elasticsearch/reference/7.8/indices-create-index.html
  (lowercase; no ``\\ / * ? " < > | , #``, space or ``:``; not starting with ``-``,
  ``_``, ``+``; not ``.`` or ``..``; at most 255 bytes; leading ``.`` deprecated except
  for hidden and system indices);
- data stream names: https://elastic.co/guide/en/elasticsearch/reference/8.15/indices-create-data-stream.html
  (the same, and not starting with ``.ds-``);
- authentication: https://www.elastic.co/docs/api/elasticsearch/authentication
  (``Authorization: ApiKey <encoded>``, ``Basic``);
- response filtering: https://elastic.co/docs/reference/elasticsearch/rest-apis/common-options
  (``filter_path``);
- OpenSearch: https://docs.opensearch.org/latest/api-reference/document-apis/bulk
  (same endpoint and semantics; ``_id`` at most 512 bytes).
Not found in the docs: the exact status of every per-item error type; the mapping
above follows the status codes, which the docs do give per item.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import field_validator
from pydantic_core import PydanticCustomError

from auditrelay.schemas.errors import InvalidInputError
from auditrelay.wire.client import Reply, status_error
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
    json_answer,
)

__all__ = ["Elasticsearch", "ElasticsearchOptions", "index_name_problem"]

CONTENT_TYPE = "application/x-ndjson"
#: What the bulk answer is cut down to (``filter_path``): enough to read every item.
FILTER_PATH = "errors,items.*.status,items.*.error.type,items.*.error.reason"
_INDEX_MAX_BYTES = 255
_FORBIDDEN_CHARACTERS = frozenset('\\/*?"<>|, #:')
_REASON_CHARS = 240
_NAMED = re.compile(r"\b(user|principal|api ?key|run_as user|realm)\s*\[[^\]]*\]", re.I)
_ERRORS_FALSE = re.compile(rb'^\s*\{\s*(?:"took"\s*:\s*\d+\s*,\s*)?"errors"\s*:\s*false\b')
#: Per-item types sent again although their status is 4xx: the customer can fix them
#: (reopen the index, lift the block) and nothing about the event is wrong.
_RETRIED_TYPES = frozenset({"index_closed_exception", "cluster_block_exception"})


def index_name_problem(name: str) -> str | None:
    """Why Elasticsearch refuses ``name`` as an index or data stream name, or None."""
    if not name:
        return "must not be empty"
    if name in (".", ".."):
        return "must not be . or .."
    if len(name.encode("utf-8")) > _INDEX_MAX_BYTES:
        return f"must be at most {_INDEX_MAX_BYTES} bytes"
    if name.lower() != name:
        return "must be lowercase"
    bad = sorted({c for c in name if c in _FORBIDDEN_CHARACTERS or ord(c) < 0x20
                  or ord(c) == 0x7f})
    if bad:
        shown = " ".join("space" if c == " " else repr(c) if ord(c) < 0x20 or c == "\x7f"
                         else c for c in bad)
        return f'must not contain \\ / * ? " < > | , # : or spaces (found: {shown})'
    if name[0] in "-_+":
        return "must not start with -, _ or +"
    if name.startswith("."):
        return ("must not start with . (reserved for hidden and system indices; "
                "data streams' backing indices are .ds-...)")
    return None


class ElasticsearchOptions(KindOptions):
    #: The index, alias or data stream the events are written to.
    index: str

    @field_validator("index")
    @classmethod
    def _valid_index(cls, value: str) -> str:
        problem = index_name_problem(value)
        if problem is not None:
            raise PydanticCustomError("index_name",
                                      "Elasticsearch refuses this index name: {problem}",
                                      {"problem": problem})
        return value


class ElasticsearchCredentials(Credentials):
    """``api_key``, or ``username`` and ``password``, never both; a username for HTTP
    Basic cannot contain a colon (RFC 7617)."""

    def check(self, given: Mapping[str, str], kind: str) -> dict[str, str]:
        Credentials(self.names).check(given, kind)  # names and values first
        basic = {"username", "password"}
        if "api_key" in given and given.keys() & basic:
            raise InvalidInputError(
                "credentials.api_key: give either api_key, or username and password, "
                "not both", field="credentials.api_key")
        missing = sorted(basic - given.keys())
        if given.keys() & basic and missing:
            raise InvalidInputError(
                f"credentials.{missing[0]}: HTTP Basic auth needs both username and password",
                field=f"credentials.{missing[0]}")
        if ":" in given.get("username", ""):
            raise InvalidInputError("credentials.username: must not contain ':' (HTTP Basic)",
                                    field="credentials.username")
        return Credentials(self.names, self.required).check(given, kind)


class Elasticsearch(Kind):
    name: ClassVar[str] = "elasticsearch"
    label: ClassVar[str] = "Elasticsearch"
    Options: ClassVar[type[KindOptions]] = ElasticsearchOptions
    credentials: ClassVar[Credentials] = ElasticsearchCredentials(
        names=("api_key", "username", "password"),
        required=(frozenset({"api_key"}), frozenset({"username", "password"})))
    # 100 events of at most a few KB each: far below http.max_content_length (100mb).
    limits: ClassVar[Limits] = Limits(max_events=100)
    content_type: ClassVar[str] = CONTENT_TYPE

    # -- fields ----------------------------------------------------------------------------

    def check_url(self, url: str) -> str:
        parts = urlsplit(url)
        if parts.query or parts.fragment:
            raise InvalidInputError("url: give the cluster's base URL, without a query or "
                                    "fragment (auditrelay adds /_bulk)", field="url")
        path = parts.path.rstrip("/")
        if path.endswith("/_bulk") or "/_bulk/" in path + "/":
            raise InvalidInputError("url: give the cluster's base URL, without /_bulk "
                                    "(auditrelay adds it)", field="url")
        return url.rstrip("/")

    # -- requests --------------------------------------------------------------------------

    def url_of(self, target: Target) -> str:
        return f"{target.url.rstrip('/')}/_bulk?filter_path={FILTER_PATH}"

    def body(self, batch: Batch, target: Target, events: Sequence[int]) -> bytes:
        # The action lines differ only by the id: their start is encoded once per body.
        start = b'{"create":{"_index":' + json.dumps(getattr(target.options, "index", "")
                                                    ).encode()
        every = batch.events
        lines: list[bytes] = []
        for position in events:
            event = every[position]
            event_id = event.data.get("id")
            if isinstance(event_id, str) and event_id:
                lines.append(start + b',"_id":' + json.dumps(event_id).encode() + b"}}")
            else:
                lines.append(start + b"}}")
            lines.append(document(event))
        return b"\n".join(lines) + b"\n"

    def headers(self, target: Target, batch: Batch, body: bytes,
                ) -> Mapping[str, str] | Callable[[], Mapping[str, str]]:
        return {**target.custom_headers, **self.base_headers(target, batch),
                "X-Opaque-Id": batch.batch_id, "Authorization": authorization(target)}

    # -- answers ---------------------------------------------------------------------------

    def read(self, reply: Reply, request: Request) -> Verdict:
        status = reply.status
        if status is None:
            return Verdict("retry", reply.error)
        if 200 <= status < 300:
            return self._items(reply, request)
        kind, reason = _error(json_answer(reply))
        if status == 401:
            return Verdict("retry", "Elasticsearch rejected the credentials (HTTP 401)")
        if status == 403:
            return Verdict("retry", "Elasticsearch refused the request: the credentials may "
                           "not write to the index (HTTP 403)")
        if status == 413:
            return Verdict("split", "the request is larger than Elasticsearch accepts "
                           "(HTTP 413)")
        if status in (408, 429) or status >= 500:
            words = "Elasticsearch is overloaded" if status == 429 else \
                "Elasticsearch did not handle the request"
            return Verdict("retry", f"{words} (HTTP {status}{_detail(kind, reason)})",
                           retry_after_seconds=reply.retry_after_seconds)
        if status == 400:
            return Verdict("rejected", f"Elasticsearch refused the request (HTTP 400"
                           f"{_detail(kind, reason)})")
        if status == 404:
            return Verdict("retry", "Elasticsearch answered 404: is the URL the cluster's "
                           f"base URL? (HTTP 404{_detail(kind, reason)})")
        return Verdict("retry", status_error(status))

    def _items(self, reply: Reply, request: Request) -> Verdict:
        if _ERRORS_FALSE.match(reply.body):
            return Verdict("delivered")
        items = json_answer(reply).get("items")
        if not isinstance(items, list):
            words = (f"Elasticsearch's answer (HTTP {reply.status}) could not be read as a "
                     "bulk answer")
            if len(request.events) > 1:
                return Verdict("split", words)
            return Verdict("retry", words)
        retry: list[int] = []
        rejected: list[tuple[int, str]] = []
        notes: dict[str, None] = {}
        for position in range(len(request.events)):
            item = _item(items[position]) if position < len(items) else None
            outcome, words = _item_outcome(item)
            if outcome == "retry":
                retry.append(position)
                notes[words] = None
            elif outcome == "rejected":
                rejected.append((position, words))
                notes[words] = None
        if not retry and not rejected:
            return Verdict("delivered")
        taken = len(request.events) - len(retry) - len(rejected)
        summary = f"Elasticsearch took {taken} of {len(request.events)} events"
        if retry:
            summary += f"; {len(retry)} to send again"
        if rejected:
            summary += f"; {len(rejected)} refused for good"
        return Verdict("delivered", f"{summary}: {'; '.join(notes)}"[:400],
                       retry_items=tuple(retry), rejected_items=tuple(rejected))


# -- encoding ----------------------------------------------------------------------------------


def document(event: Event) -> bytes:
    """The event's envelope as one NDJSON line, ``@timestamp`` (its ``time``) first."""
    raw = event.raw
    if b"\n" in raw or b"\r" in raw:
        # Whitespace between tokens may hold newlines; a bulk source is one line.
        raw = json.dumps(event.data, separators=(",", ":"), ensure_ascii=False).encode()
    time = event.field("time")
    if not isinstance(time, str) or not raw.startswith(b"{") or "@timestamp" in event.data:
        return raw
    rest = raw[1:].lstrip()
    stamp = b'{"@timestamp":' + json.dumps(time).encode()
    return stamp + rest if rest.startswith(b"}") else stamp + b"," + rest


def authorization(target: Target) -> str:
    """The ``Authorization`` value of ``target``'s credentials (never logged)."""
    credentials = target.credentials
    api_key = credentials.get("api_key")
    if api_key:
        if ":" in api_key:  # id:api_key, not yet encoded (":" is not base64)
            api_key = base64.b64encode(api_key.encode()).decode()
        return f"ApiKey {api_key}"
    pair = f"{credentials.get('username', '')}:{credentials.get('password', '')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


# -- answers -----------------------------------------------------------------------------------


def _error(answer: Mapping[str, Any]) -> tuple[str, str]:
    """``error.type`` and ``error.reason`` of an error answer (strings, maybe empty)."""
    error = answer.get("error")
    if isinstance(error, str):
        return "", error
    if not isinstance(error, dict):
        return "", ""
    kind, reason = error.get("type"), error.get("reason")
    return (kind if isinstance(kind, str) else "", reason if isinstance(reason, str) else "")


def _detail(kind: str, reason: str) -> str:
    text = f"{kind}: {reason}" if kind and reason else kind or reason
    return f" {_masked(text)}" if text else ""


def _masked(text: str) -> str:
    """``text`` on one line, shortened, with any user or API key it names masked."""
    text = _NAMED.sub(lambda m: f"{m.group(1)} [...]", " ".join(text.split()))
    return text if len(text) <= _REASON_CHARS else text[:_REASON_CHARS - 3] + "..."


def _item(value: object) -> dict[str, Any] | None:
    """The result of one item, ``{"create": {...}}`` -> ``{...}``."""
    if not isinstance(value, dict) or len(value) != 1:
        return None
    result = next(iter(value.values()))
    return result if isinstance(result, dict) else None


def _item_outcome(item: dict[str, Any] | None) -> tuple[str, str]:
    """``("ok" | "retry" | "rejected", words)`` of one item's result."""
    if item is None or not isinstance(item.get("status"), int):
        return "retry", "an item's result is missing from Elasticsearch's answer"
    status: int = item["status"]
    if 200 <= status < 300 or status == 409:
        return "ok", ""
    kind, reason = _error(item)
    detail = _detail(kind, reason)
    if status in (401, 403):
        return "retry", f"Elasticsearch refused the credentials for the index (HTTP {status})"
    if status == 404:
        return "retry", ("Elasticsearch has no such index and does not create it "
                         f"automatically: create it, or allow automatic creation "
                         f"(HTTP 404{detail})")
    if status in (408, 429) or status >= 500 or kind in _RETRIED_TYPES:
        return "retry", f"HTTP {status}{detail}"
    if 400 <= status < 500:
        return "rejected", f"Elasticsearch refused the event (HTTP {status}{detail})"
    return "retry", f"HTTP {status}{detail}"
