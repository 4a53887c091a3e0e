"""A strict fake of Elasticsearch's ``_bulk`` API, written from its documentation, for
tests of the ``elasticsearch`` destination kind.

Serve it with ``tests.support.servers.serve(fake)`` (or ``Server(fake, cert=...)``).
What it implements (https://www.elastic.co/docs/api/doc/elasticsearch/operation/operation-bulk,
https://www.elastic.co/docs/api/elasticsearch/authentication, common options):

- ``POST``/``PUT`` ``/_bulk`` and ``/{index}/_bulk``; ``Content-Type`` must be
  ``application/x-ndjson`` or ``application/json`` (else 406); a body larger than
  ``max_content_length`` is 413 (no body, as the HTTP layer answers);
- auth: ``Authorization: ApiKey <base64 id:key>`` or ``Basic``; missing or wrong: 401
  ``security_exception`` with ``WWW-Authenticate``;
- NDJSON parsed exactly: the body must end with a newline (400
  ``illegal_argument_exception`` otherwise), each line may end with ``\\r``; an action
  line is an object of one action; ``create`` and ``index`` need a source line (one JSON
  object); only ``create`` is implemented (others: 400); unknown metadata: 400;
- per item, in order: an invalid index name 400 ``invalid_index_name_exception``; an
  ``_id`` over 512 bytes 400; a missing index with automatic creation off 404
  ``index_not_found_exception``; a data stream document without ``@timestamp`` 400;
  the switchable failures (429 ``es_rejected_execution_exception`` where ``busy(id,
  tries)`` says so; 400 ``document_parsing_exception`` for documents holding the field
  ``mapping_error_field``); an ``_id`` already in the index 409
  ``version_conflict_engine_exception``; else stored, 201 ``created``;
- the answer ``{"took", "errors", "items": [{"create": {..., "status", "error":
  {"type", "reason"}}}]}``, with ``filter_path`` honoured (comma-separated dotted paths,
  ``*`` wildcards, arrays transparent); error answers are not filtered (as in
  Elasticsearch);
- whole-request failures on demand: ``fail_next(status, times, retry_after)`` (429
  ``es_rejected_execution_exception``, 503, 401...), or ``status_all`` for every request.

Documents are kept by ``_id`` per index (``documents(index)``, ``count(index)``); every
exchange is recorded (``snapshot()``, as ``tests.support.receivers.recording.Exchange``).
"""

from __future__ import annotations

import base64
import fnmatch
import json
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote

from tests.support.receivers.recording import Answer, RecordingApp

__all__ = ["FakeElasticsearch"]

_ACTIONS = ("create", "index", "update", "delete")
_METADATA = frozenset({"_index", "_id", "routing", "if_seq_no", "if_primary_term", "version",
                       "version_type", "pipeline", "require_alias", "dynamic_templates",
                       "require_data_stream", "list_executed_pipelines"})
_NOTHING = object()
_ID_MAX_BYTES = 512
#: The API key of Elasticsearch's create API key example (a test value, not a secret).
EXAMPLE_KEY_ID = "VuaCfGcBCdbkQm-e5aOx"
EXAMPLE_KEY_SECRET = "ui2lp2axTNmsyakw9tvNnw"


def _error_body(status: int, kind: str, reason: str, **more: Any) -> dict[str, Any]:
    cause = {"type": kind, "reason": reason, **more}
    return {"error": {"root_cause": [cause], **cause}, "status": status}


def _index_problem(name: str) -> str | None:
    """Elasticsearch's index name rules (create index API, path parameters)."""
    if name != name.lower():
        return "must be lowercase"
    if any(c in '\\/*?"<>| ,#:' for c in name):
        return 'must not contain the following characters [\\, /, *, ?, ", <, >, |, ' \
               "' ', ',', #, :]"
    if name[:1] in ("-", "_", "+"):
        return "must not start with '_', '-', or '+'"
    if name in ("", ".", ".."):
        return "must not be '.' or '..'"
    if len(name.encode()) > 255:
        return "index name is too long, (> 255)"
    return None


class _BadRequest(Exception):
    def __init__(self, status: int, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.kind, self.reason = status, kind, reason


class FakeElasticsearch(RecordingApp):
    """An ASGI app answering ``_bulk`` as Elasticsearch does (see the module docstring).

    Credentials: an API key (``api_key_id`` + ``api_key_secret``; ``encoded_api_key``
    is what Elasticsearch shows as "encoded") and/or a user (``username`` +
    ``password``). Attributes a test may change at any time: ``busy``,
    ``mapping_error_field``, ``auto_create``, ``status_all``, ``max_content_length``.
    """

    def __init__(self, *, api_key_id: str | None = EXAMPLE_KEY_ID,
                 api_key_secret: str | None = EXAMPLE_KEY_SECRET,
                 username: str | None = None, password: str | None = None,
                 auto_create: bool = True, data_streams: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.api_key_id, self.api_key_secret = api_key_id, api_key_secret
        self.username, self.password = username, password
        self.auto_create = auto_create
        self.data_streams = set(data_streams)
        self.max_content_length = 100 * 1024 * 1024
        #: ``busy(id, tries)``: answer this item 429 (tries counts earlier ones, from 0).
        self.busy: Callable[[str, int], bool] | None = None
        #: Documents holding this dotted field fail with a mapping error (400).
        self.mapping_error_field: str | None = None
        #: Every request answered with this status (an outage), when set.
        self.status_all: int | None = None
        self.conflicts = 0
        self.rejected_busy = 0
        self.rejected_mapping = 0
        self._indices: dict[str, dict[str, dict[str, Any]]] = {}
        self._tries: Counter[str] = Counter()
        self._fail: deque[tuple[int, float | None]] = deque()
        self._seq = 0

    # -- what tests use ------------------------------------------------------------------

    @property
    def encoded_api_key(self) -> str:
        return base64.b64encode(f"{self.api_key_id}:{self.api_key_secret}".encode()).decode()

    def fail_next(self, status: int, times: int = 1, retry_after: float | None = None) -> None:
        """Answer the next ``times`` requests with ``status`` as a whole."""
        with self.lock:
            self._fail.extend([(status, retry_after)] * times)

    def documents(self, index: str) -> dict[str, dict[str, Any]]:
        with self.lock:
            return dict(self._indices.get(index, {}))

    def count(self, index: str) -> int:
        with self.lock:
            return len(self._indices.get(index, {}))

    def create_index(self, index: str) -> None:
        with self.lock:
            self._indices.setdefault(index, {})

    # -- the bulk API --------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        route, _, query = path.partition("?")
        status, extra, answer = self._answer(method, route, query, headers, body)
        return Answer(status, b"" if answer is None else json.dumps(answer).encode(),
                      (("x-elastic-product", "Elasticsearch"), *extra))

    def _answer(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes,
                ) -> tuple[int, list[tuple[str, str]], Any]:
        if self.status_all is not None:
            return self._whole(self.status_all, None)
        if self._fail:
            return self._whole(*self._fail.popleft())
        if len(body) > self.max_content_length:
            return 413, [], None
        if not self._authenticated(headers.get("authorization", "")):
            reason = ("missing authentication credentials for REST request [/_bulk]"
                      if "authorization" not in headers
                      else "unable to authenticate with provided credentials")
            return 401, [("www-authenticate", 'ApiKey, Basic realm="security", '
                                              'charset="UTF-8"')], \
                _error_body(401, "security_exception", reason)
        segments = [unquote(s) for s in path.strip("/").split("/")]
        if method not in ("POST", "PUT") or segments[-1] != "_bulk" or len(segments) > 2:
            return 405, [], _error_body(405, "illegal_argument_exception",
                                        f"Incorrect HTTP method for uri [{path}] and method "
                                        f"[{method}]")
        content_type = headers.get("content-type", "").split(";")[0].strip()
        if content_type not in ("application/x-ndjson", "application/json"):
            return 406, [], {"error": f"Content-Type header [{content_type}] is not supported",
                             "status": 406}
        params = parse_qs(query, keep_blank_values=True)
        try:
            operations = self._parse(body, segments[0] if len(segments) == 2 else None)
        except _BadRequest as bad:
            return bad.status, [], _error_body(bad.status, bad.kind, bad.reason)
        started = time.monotonic()
        items = [{"create": self._create(index, doc_id, source)}
                 for index, doc_id, source in operations]
        answer = {"took": int((time.monotonic() - started) * 1000),
                  "errors": any("error" in item["create"] for item in items), "items": items}
        filters = ",".join(params.get("filter_path", []))
        return 200, [], _filtered(answer, filters) if filters else answer

    def _whole(self, status: int, retry_after: float | None,
               ) -> tuple[int, list[tuple[str, str]], Any]:
        extra = [] if retry_after is None else [("retry-after", str(int(retry_after)))]
        if status == 401:
            return 401, extra, _error_body(401, "security_exception",
                                           "unable to authenticate with provided credentials")
        if status == 429:
            return 429, extra, _error_body(
                429, "es_rejected_execution_exception",
                "rejected execution of coordinating operation [coordinating_and_primary_bytes"
                "=0, replica_bytes=0, all_bytes=0, coordinating_operation_bytes=52428800, "
                "max_coordinating_and_primary_bytes=53687091]")
        if status == 503:
            return 503, extra, _error_body(503, "master_not_discovered_exception", "")
        return status, extra, _error_body(status, "exception", f"scripted HTTP {status}")

    def _authenticated(self, header: str) -> bool:
        scheme, _, value = header.partition(" ")
        if scheme == "ApiKey" and self.api_key_id is not None:
            return value == self.encoded_api_key
        if scheme == "Basic" and self.username is not None:
            try:
                decoded = base64.b64decode(value, validate=True).decode()
            except ValueError:
                return False
            return decoded == f"{self.username}:{self.password}"
        return False

    def _parse(self, body: bytes, path_index: str | None,
               ) -> list[tuple[str, str | None, dict[str, Any]]]:
        """``(index, _id, source)`` of each operation, or ``_BadRequest``."""
        if not body.endswith(b"\n"):
            raise _BadRequest(400, "illegal_argument_exception",
                              "The bulk request must be terminated by a newline [\\n]")
        lines = body[:-1].split(b"\n")
        operations = []
        number = 0
        while number < len(lines):
            action = self._object(lines[number], number + 1, "Malformed action/metadata line")
            if len(action) != 1 or next(iter(action)) not in _ACTIONS:
                raise _BadRequest(400, "illegal_argument_exception",
                                  f"Malformed action/metadata line [{number + 1}], expected "
                                  f"one of {list(_ACTIONS)}")
            name, meta = next(iter(action.items()))
            if not isinstance(meta, dict):
                raise _BadRequest(400, "illegal_argument_exception",
                                  f"Malformed action/metadata line [{number + 1}]")
            unknown = set(meta) - _METADATA
            if unknown:
                raise _BadRequest(400, "illegal_argument_exception",
                                  f"Action/metadata line [{number + 1}] contains an unknown "
                                  f"parameter [{sorted(unknown)[0]}]")
            if name != "create":
                raise _BadRequest(400, "illegal_argument_exception",
                                  f"this fake implements create only, not {name}")
            if number + 1 >= len(lines):
                raise _BadRequest(400, "illegal_argument_exception",
                                  f"The bulk request must be terminated by a newline [\\n]; "
                                  f"action line [{number + 1}] has no source")
            source = self._object(lines[number + 1], number + 2, "Malformed source line")
            index = meta.get("_index", path_index)
            if not isinstance(index, str):
                raise _BadRequest(400, "action_request_validation_exception",
                                  "Validation Failed: 1: index is missing;")
            doc_id = meta.get("_id")
            operations.append((index, doc_id if isinstance(doc_id, str) else None, source))
            number += 2
        if not operations:
            raise _BadRequest(400, "action_request_validation_exception",
                              "Validation Failed: 1: no requests added;")
        return operations

    @staticmethod
    def _object(line: bytes, number: int, what: str) -> dict[str, Any]:
        line = line[:-1] if line.endswith(b"\r") else line
        try:
            value = json.loads(line)
        except ValueError:
            raise _BadRequest(400, "x_content_parse_exception",
                              f"{what} [{number}]: not one JSON object") from None
        if not isinstance(value, dict):
            raise _BadRequest(400, "illegal_argument_exception",
                              f"{what} [{number}], expected START_OBJECT")
        return value

    def _create(self, index: str, doc_id: str | None, source: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = {"_index": index, "_id": doc_id}
        problem = _index_problem(index)
        if problem is not None:
            return self._failed(result, 400, "invalid_index_name_exception",
                                f"Invalid index name [{index}], {problem}")
        if doc_id is None:
            doc_id = f"gen{self._seq}"
            result["_id"] = doc_id
        if len(doc_id.encode()) > _ID_MAX_BYTES:
            return self._failed(result, 400, "illegal_argument_exception",
                                f"id [{doc_id[:20]}...] is too long, must be no longer than "
                                f"512 bytes but was: {len(doc_id.encode())}")
        if index not in self._indices and not self.auto_create:
            return self._failed(result, 404, "index_not_found_exception",
                                f"no such index [{index}]")
        tries = self._tries[doc_id]
        self._tries[doc_id] += 1
        if self.busy is not None and self.busy(doc_id, tries):
            self.rejected_busy += 1
            return self._failed(result, 429, "es_rejected_execution_exception",
                                "rejected execution of primary operation [shard_id=[[" + index
                                + "][0]], queue capacity 10000]")
        if index in self.data_streams and "@timestamp" not in source:
            return self._failed(result, 400, "document_parsing_exception",
                                "[1:2] data stream timestamp field [@timestamp] is missing")
        field = self.mapping_error_field
        if field is not None and _has_field(source, field):
            self.rejected_mapping += 1
            return self._failed(result, 400, "document_parsing_exception",
                                f"[1:120] failed to parse field [{field}] of type [long] in "
                                f"document with id '{doc_id}'. Preview of field's value: 'x'")
        documents = self._indices.setdefault(index, {})
        if doc_id in documents:
            self.conflicts += 1
            return self._failed(result, 409, "version_conflict_engine_exception",
                                f"[{doc_id}]: version conflict, document already exists "
                                "(current version [1])")
        documents[doc_id] = source
        self._seq += 1
        return {**result, "_version": 1, "result": "created",
                "_shards": {"total": 2, "successful": 1, "failed": 0},
                "_seq_no": self._seq, "_primary_term": 1, "status": 201}

    @staticmethod
    def _failed(result: dict[str, Any], status: int, kind: str, reason: str) -> dict[str, Any]:
        return {**result, "status": status,
                "error": {"type": kind, "reason": reason, "index": result["_index"],
                          "index_uuid": "aAsFqTI0Tc2W0LCWgPNrOA", "shard": "0"}}


def _has_field(source: dict[str, Any], dotted: str) -> bool:
    value: Any = source
    for step in dotted.split("."):
        if not isinstance(value, dict) or step not in value:
            return False
        value = value[step]
    return True


def _filtered(answer: Any, filters: str) -> Any:
    """``answer`` cut to the ``filter_path`` ``filters`` (inclusive filters only)."""
    patterns = [f.strip().split(".") for f in filters.split(",") if f.strip()]
    if any(p[0].startswith("-") for p in patterns):
        raise AssertionError("exclusive filter_path filters are not implemented in the fake")
    kept = _keep(answer, patterns)
    return {} if kept is _NOTHING else kept


def _keep(value: Any, patterns: list[list[str]]) -> Any:
    if any(not p for p in patterns):
        return value  # a filter matched all the way down: the whole value is kept
    if isinstance(value, list):
        kept = [k for k in (_keep(v, patterns) for v in value) if k is not _NOTHING]
        return kept if kept else _NOTHING
    if isinstance(value, dict):
        out = {}
        for key, child in value.items():
            rest = [p[1:] for p in patterns if fnmatch.fnmatchcase(key, p[0])]
            if rest:
                kept = _keep(child, rest)
                if kept is not _NOTHING:
                    out[key] = kept
        return out if out else _NOTHING
    return _NOTHING
