"""The ``elasticsearch`` kind: ``_bulk`` NDJSON of ``create`` actions, auth, index names,
and every documented answer read as the module docstring says."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from auditrelay.schemas.errors import InvalidInputError
from auditrelay.wire.client import Reply
from auditrelay.wire.kinds import KINDS, kind_options
from auditrelay.wire.kinds.base import Batch, Event, Request, Target
from auditrelay.wire.kinds.elasticsearch import (
    FILTER_PATH,
    Elasticsearch,
    ElasticsearchOptions,
    document,
    index_name_problem,
)
from auditrelay.wire.kinds.send import Pacer, send_batch
from tests.support.receivers.elasticsearch import _filtered
from tests.unit.wire.kinds.test_base import target as base_target

ES = Elasticsearch()
ENCODED = base64.b64encode(b"VuaCfGcBCdbkQm-e5aOx:ui2lp2axTNmsyakw9tvNnw").decode()


def envelope(n: int, **more: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"aud_{n:03d}", "source": "https://x/workspaces/ws1",
            "type": "pro.atmos.auth.login_succeeded", "time": "2026-11-25T10:30:00.000Z",
            "workspaceid": "ws1", "data": {"metadata": {"n": n}}, **more}


def batch_of(n: int, **more: Any) -> Batch:
    body = "[" + ",".join(json.dumps(envelope(i, **more)) for i in range(n)) + "]"
    return Batch(body.encode(), "msg_01", "ws1", n)


def target(credentials: Mapping[str, str] | None = None, url: str = "https://es.example:9200",
           index: str = "audit") -> Target:
    base = base_target(ElasticsearchOptions(index=index))
    return type(base)(config=base.config, url=url, options=base.options,
                      credentials=credentials or {"api_key": ENCODED},
                      custom_headers={"X-Tenant": "acme", "Authorization": "custom"},
                      secrets=base.secrets, now=base.now, version="9.9")


# -- registration and fields ---------------------------------------------------------------


def test_the_kind_is_registered() -> None:
    assert KINDS["elasticsearch"] is not None
    assert KINDS["elasticsearch"].label == "Elasticsearch"


@pytest.mark.parametrize("name", ["audit", "logs-auditrelay-default", "audit_2026.12",
                                  "été", "a" * 255, "a-", "9"])
def test_index_names_elasticsearch_takes(name: str) -> None:
    assert index_name_problem(name) is None
    assert kind_options(ES, {"index": name}) == {"index": name}


@pytest.mark.parametrize(("name", "words"), [
    ("", "empty"), ("Audit", "lowercase"), ("a b", "space"), ("a,b", ","), ("a#b", "#"),
    ("a:b", ":"), ("a/b", "/"), ("a\\b", "\\"), ("a*", "*"), ("a?", "?"), ('a"', '"'),
    ("a<", "<"), ("a>", ">"), ("a|b", "|"), ("a\tb", "\\t"), ("-a", "start"), ("_a", "start"),
    ("+a", "start"), (".", ". or .."), ("..", ". or .."), (".hidden", "start with ."),
    (".ds-logs", "start with ."), ("a" * 256, "255 bytes"), ("é" * 128, "255 bytes"),
])
def test_index_names_elasticsearch_refuses_are_422_naming_options_index(name: str,
                                                                        words: str) -> None:
    problem = index_name_problem(name)
    assert problem is not None
    assert words in problem
    with pytest.raises(InvalidInputError) as refused:
        kind_options(ES, {"index": name})
    assert refused.value.field == "options.index"
    assert str(refused.value).startswith("options.index: Elasticsearch refuses this index name")


def test_the_index_is_required_and_nothing_else_is_an_option() -> None:
    with pytest.raises(InvalidInputError) as missing:
        kind_options(ES, {})
    assert missing.value.field == "options.index"
    with pytest.raises(InvalidInputError) as unknown:
        kind_options(ES, {"index": "audit", "gzip": True})
    assert unknown.value.field == "options.gzip"


@pytest.mark.parametrize(("given", "kept"), [
    ({"api_key": ENCODED}, {"api_key": ENCODED}),
    ({"api_key": "id:secret"}, {"api_key": "id:secret"}),
    ({"username": "elastic", "password": "pw"}, {"username": "elastic", "password": "pw"}),
])
def test_credentials_sets_that_are_taken(given: dict[str, str], kept: dict[str, str]) -> None:
    assert ES.credentials.check(given, "elasticsearch") == kept


@pytest.mark.parametrize(("given", "field"), [
    ({}, "credentials.api_key"),
    ({"username": "elastic"}, "credentials.password"),
    ({"password": "sekrit-pw"}, "credentials.username"),
    ({"api_key": "sekrit-key", "username": "u", "password": "sekrit-pw"},
     "credentials.api_key"),
    ({"username": "a:b", "password": "sekrit-pw"}, "credentials.username"),
    ({"token": "sekrit-token"}, "credentials.token"),
    ({"api_key": "sekrit key"}, "credentials.api_key"),
])
def test_credentials_sets_that_are_refused_name_the_field_not_the_value(
        given: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        ES.credentials.check(given, "elasticsearch")
    assert refused.value.field == field
    assert "sekrit" not in str(refused.value)


@pytest.mark.parametrize(("url", "kept"), [
    ("https://es.example:9200", "https://es.example:9200"),
    ("https://es.example:9200/", "https://es.example:9200"),
    ("https://proxy.example/elastic/", "https://proxy.example/elastic"),
])
def test_the_url_is_the_clusters_base(url: str, kept: str) -> None:
    assert ES.check_url(url) == kept


@pytest.mark.parametrize("url", ["https://es.example:9200/_bulk",
                                 "https://es.example:9200/audit/_bulk/",
                                 "https://es.example:9200/?pretty",
                                 "https://es.example:9200/#x"])
def test_a_url_with_bulk_a_query_or_a_fragment_is_refused(url: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        ES.check_url(url)
    assert refused.value.field == "url"


# -- requests ------------------------------------------------------------------------------


def test_the_body_is_ndjson_of_create_actions_with_the_event_id() -> None:
    batch = batch_of(3)
    [request] = ES.requests(batch, target(), range(3))
    assert request.url == f"https://es.example:9200/_bulk?filter_path={FILTER_PATH}"
    assert request.events == (0, 1, 2)
    assert request.body.endswith(b"\n")
    lines = request.body[:-1].split(b"\n")
    assert len(lines) == 6
    for n in range(3):
        assert json.loads(lines[2 * n]) == {"create": {"_index": "audit", "_id": f"aud_{n:03d}"}}
        source = json.loads(lines[2 * n + 1])
        assert next(iter(source)) == "@timestamp"
        assert source == {"@timestamp": "2026-11-25T10:30:00.000Z", **envelope(n)}
        # The envelope's bytes are kept as produced, after the inserted timestamp.
        assert lines[2 * n + 1].endswith(batch.events[n].raw[1:])


def test_a_part_of_a_batch_carries_only_its_events() -> None:
    [request] = ES.requests(batch_of(5), target(index="logs-audit-default"), [1, 3])
    lines = request.body[:-1].split(b"\n")
    assert [json.loads(line)["create"]["_id"] for line in lines[::2]] == ["aud_001", "aud_003"]
    assert request.events == (1, 3)


def test_a_multi_line_envelope_becomes_one_line() -> None:
    raw = json.dumps(envelope(7), indent=2).encode()
    line = document(Event(raw))
    assert b"\n" not in line
    assert json.loads(line) == {"@timestamp": "2026-11-25T10:30:00.000Z", **envelope(7)}


@pytest.mark.parametrize("raw", [b'{"id":"aud_1"}', b"{}", b'{"time": 5}'])
def test_an_envelope_without_a_time_string_is_sent_as_it_is(raw: bytes) -> None:
    assert document(Event(raw)) == raw


def test_an_empty_object_with_a_time_gets_no_dangling_comma() -> None:
    event = Event(b'{ }', {"time": "2026-11-25T10:30:00Z"})
    assert json.loads(document(event)) == {"@timestamp": "2026-11-25T10:30:00Z"}


def headers_of(request: Request) -> Mapping[str, str]:
    headers = request.headers
    return headers() if callable(headers) else headers


@pytest.mark.parametrize(("credentials", "authorization"), [
    ({"api_key": ENCODED}, f"ApiKey {ENCODED}"),
    ({"api_key": "VuaCfGcBCdbkQm-e5aOx:ui2lp2axTNmsyakw9tvNnw"}, f"ApiKey {ENCODED}"),
    ({"username": "elastic", "password": "changeme"},
     "Basic " + base64.b64encode(b"elastic:changeme").decode()),
])
def test_auth_headers(credentials: dict[str, str], authorization: str) -> None:
    [request] = ES.requests(batch_of(1), target(credentials), range(1))
    headers = headers_of(request)
    assert headers["Authorization"] == authorization  # the custom header cannot override it
    assert headers["Content-Type"] == "application/x-ndjson"
    assert headers["X-Webhook-Id"] == "msg_01"
    assert headers["X-Opaque-Id"] == "msg_01"
    assert headers["X-Tenant"] == "acme"
    assert headers["User-Agent"] == "auditrelay/9.9"
    assert "Content-Encoding" not in headers


def test_a_full_batch_is_one_request() -> None:
    requests = ES.requests(batch_of(100), target(), range(100))
    assert [len(r.events) for r in requests] == [100]


# -- answers -------------------------------------------------------------------------------

REQUEST = Request("https://es.example/_bulk", b"", {}, (0, 1, 2, 3))


def reply(status: int | None, body: Any = b"", retry_after: float | None = None,
          error: str | None = None) -> Reply:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Reply(status, error, retry_after, raw, 4)


def item(status: int, kind: str | None = None, reason: str = "") -> dict[str, Any]:
    result: dict[str, Any] = {"status": status}
    if kind is not None:
        result["error"] = {"type": kind, "reason": reason}
    return {"create": result}


def bulk(*items: dict[str, Any]) -> dict[str, Any]:
    return {"errors": any("error" in i["create"] for i in items), "items": list(items)}


def es_error(status: int, kind: str, reason: str) -> dict[str, Any]:
    cause = {"type": kind, "reason": reason}
    return {"error": {"root_cause": [cause], **cause}, "status": status}


def test_errors_false_is_delivered_without_reading_the_items() -> None:
    body = b'{"errors":false,"items":[' + b'{"create":{"status":201}},' * 99
    verdict = ES.read(reply(200, body + b"TRUNCATED"), REQUEST)  # even cut short
    assert (verdict.outcome, verdict.words) == ("delivered", None)
    assert ES.read(reply(200, b'{"took":3,"errors":false,"items":[]}'), REQUEST).outcome \
        == "delivered"


def test_created_and_conflicting_items_are_all_delivered() -> None:
    verdict = ES.read(reply(200, bulk(item(201), item(409, "version_conflict_engine_exception",
                                                            "[aud_1]: version conflict"),
                                      item(200), item(201))), REQUEST)
    assert verdict.outcome == "delivered"
    assert verdict.retry_items == ()
    assert verdict.rejected_items == ()
    assert verdict.words is None


def test_busy_items_are_sent_again_and_mapping_errors_refused_with_the_reason() -> None:
    verdict = ES.read(reply(200, bulk(
        item(201),
        item(429, "es_rejected_execution_exception", "rejected execution of primary operation"),
        item(400, "document_parsing_exception",
             "[1:120] failed to parse field [data.metadata.n] of type [long]"),
        item(503, "unavailable_shards_exception", "primary shard is not active"))), REQUEST)
    assert verdict.outcome == "delivered"
    assert verdict.retry_items == (1, 3)
    [(position, reason)] = verdict.rejected_items
    assert position == 2
    assert reason == ("Elasticsearch refused the event (HTTP 400 document_parsing_exception: "
                      "[1:120] failed to parse field [data.metadata.n] of type [long])")
    assert verdict.words is not None
    assert verdict.words.startswith("Elasticsearch took 1 of 4 events; 2 to send again; "
                                    "1 refused for good: HTTP 429 es_rejected_execution")


@pytest.mark.parametrize(("answer", "words"), [
    (item(404, "index_not_found_exception", "no such index [audit]"),
     "Elasticsearch has no such index and does not create it automatically"),
    (item(403, "security_exception", "action [indices:data/write/bulk[s]] is unauthorized "
                                     "for user [elastic] with effective roles [viewer]"),
     "Elasticsearch refused the credentials for the index (HTTP 403)"),
    (item(400, "index_closed_exception", "closed"), "HTTP 400 index_closed_exception"),
    (item(429, "cluster_block_exception", "index [audit] blocked by: [TOO_MANY_REQUESTS/12/"
                                          "disk usage exceeded flood-stage watermark]"),
     "HTTP 429 cluster_block_exception"),
    ({"create": {"error": {"type": "x"}}}, "missing"),
    ("not an item", "missing"),
])
def test_items_the_customer_can_fix_are_sent_again(answer: Any, words: str) -> None:
    verdict = ES.read(reply(200, {"errors": True, "items": [answer, item(201), item(201),
                                                            item(201)]}), REQUEST)
    assert verdict.outcome == "delivered"
    assert verdict.retry_items == (0,)
    assert verdict.rejected_items == ()
    assert verdict.words is not None
    assert words in verdict.words
    assert "elastic]" not in verdict.words


def test_items_missing_from_the_answer_are_sent_again() -> None:
    answer = {"errors": True, "items": [item(201), item(201)]}
    verdict = ES.read(reply(200, answer), REQUEST)
    assert verdict.retry_items == (2, 3)


def test_a_reason_naming_a_user_or_api_key_is_masked() -> None:
    verdict = ES.read(reply(200, bulk(item(400, "illegal_argument_exception",
                                           "no mapping for user [elastic] and api key [abc]"),
                                      item(201), item(201), item(201))), REQUEST)
    [(_, reason)] = verdict.rejected_items
    assert "elastic" not in reason
    assert "abc" not in reason
    assert "user [...]" in reason


def test_a_long_reason_is_shortened() -> None:
    verdict = ES.read(reply(200, bulk(item(400, "document_parsing_exception", "x" * 5000),
                                      item(201), item(201), item(201))), REQUEST)
    [(_, reason)] = verdict.rejected_items
    assert len(reason) < 320
    assert reason.endswith("...)")


@pytest.mark.parametrize(("body", "events", "outcome"), [
    (b"<html>welcome</html>", (0, 1), "split"),
    (b'{"errors":true,"items":[{"create":{"status":201}},', (0, 1, 2), "split"),
    (b"<html>welcome</html>", (0,), "retry"),
    (b'{"acknowledged":true}', (0,), "retry"),
])
def test_a_2xx_answer_that_cannot_be_read_is_split_or_retried(
        body: bytes, events: tuple[int, ...], outcome: str) -> None:
    verdict = ES.read(reply(200, body), Request("u", b"", {}, events))
    assert verdict.outcome == outcome
    assert verdict.words == "Elasticsearch's answer (HTTP 200) could not be read as a bulk answer"


@pytest.mark.parametrize(("answer", "outcome", "words"), [
    (reply(401, es_error(401, "security_exception",
                         "unable to authenticate user [elastic] for REST request [/_bulk]")),
     "retry", "Elasticsearch rejected the credentials (HTTP 401)"),
    (reply(403, es_error(403, "security_exception", "action is unauthorized for user [x]")),
     "retry", "Elasticsearch refused the request: the credentials may not write to the "
              "index (HTTP 403)"),
    (reply(413), "split", "the request is larger than Elasticsearch accepts (HTTP 413)"),
    (reply(429, es_error(429, "es_rejected_execution_exception", "rejected execution")),
     "retry", "Elasticsearch is overloaded (HTTP 429 es_rejected_execution_exception: "
              "rejected execution)"),
    (reply(503, es_error(503, "master_not_discovered_exception", "")),
     "retry", "Elasticsearch did not handle the request (HTTP 503 "
              "master_not_discovered_exception)"),
    (reply(502, b"<html>bad gateway</html>"), "retry",
     "Elasticsearch did not handle the request (HTTP 502)"),
    (reply(400, es_error(400, "illegal_argument_exception",
                         "The bulk request must be terminated by a newline [\\n]")),
     "rejected", "Elasticsearch refused the request (HTTP 400 illegal_argument_exception: "
                 "The bulk request must be terminated by a newline [\\n])"),
    (reply(404, {"error": "Incorrect HTTP method", "status": 404}), "retry",
     "Elasticsearch answered 404: is the URL the cluster's base URL? (HTTP 404 Incorrect "
     "HTTP method)"),
    (reply(302), "retry", "HTTP 302: redirect not followed"),
    (reply(410), "retry", "HTTP 410 Gone: the receiver asks to stop deliveries"),
    (reply(None, error="ConnectError: refused"), "retry", "ConnectError: refused"),
])
def test_whole_request_answers(answer: Reply, outcome: str, words: str) -> None:
    verdict = ES.read(answer, REQUEST)
    assert (verdict.outcome, verdict.words) == (outcome, words)
    assert "elastic" not in (verdict.words or "")


def test_retry_after_is_honoured_on_429_and_503() -> None:
    for status in (429, 503):
        verdict = ES.read(reply(status, b"", retry_after=30.0), REQUEST)
        assert (verdict.outcome, verdict.retry_after_seconds) == ("retry", 30.0)


def test_a_filtered_answer_to_100_failed_items_fits_in_64_kib() -> None:
    reason = ("[1:120] failed to parse field [data.metadata.some_long_field_name] of type "
              "[long] in document with id 'aud_01JDXXXXXXXXXXXXXXXXXXXXXX'. Preview of "
              "field's value: 'not a number'")
    full = {"took": 30, "errors": True, "items": [
        {"create": {"_index": "audit", "_id": f"aud_{n}", "status": 400,
                    "error": {"type": "document_parsing_exception", "reason": reason,
                              "index_uuid": "aAsFqTI0Tc2W0LCWgPNrOA", "shard": "0",
                              "index": "audit", "caused_by": {"type": "illegal_argument_"
                                                              "exception", "reason": reason}}}}
        for n in range(100)]}
    body = json.dumps(_filtered(full, FILTER_PATH)).encode()
    assert len(body) < 64 * 1024
    assert len(body) < len(json.dumps(full)) / 2
    verdict = ES.read(reply(200, body), Request("u", b"", {}, tuple(range(100))))
    assert len(verdict.rejected_items) == 100


# -- one attempt: the per-item answers become parts ----------------------------------------


class Poster:
    def __init__(self, answer: Callable[[list[str]], Reply]) -> None:
        self.answer = answer
        self.sent: list[list[str]] = []

    async def request(self, url: str, body: bytes,
                      headers: Mapping[str, str] | Callable[[], Mapping[str, str]]) -> Reply:
        ids = [json.loads(line)["create"]["_id"] for line in body[:-1].split(b"\n")[::2]]
        self.sent.append(ids)
        return self.answer(ids)


@pytest.mark.asyncio
async def test_an_attempt_leaves_busy_items_pending_and_mapping_errors_rejected() -> None:
    def answer(ids: list[str]) -> Reply:
        return reply(200, bulk(*(
            item(429, "es_rejected_execution_exception", "busy") if i in ("aud_003", "aud_005")
            else item(400, "document_parsing_exception", "bad field") if i == "aud_007"
            else item(201) for i in ids)))

    poster = Poster(answer)
    result = await send_batch(poster, ES, target(), batch_of(10), Pacer())
    assert len(poster.sent) == 1
    assert not result.ok
    assert result.status_code == 200
    assert result.pending is not None
    assert [e["id"] for e in json.loads(result.pending.body)] == ["aud_003", "aud_005"]
    assert result.rejected is not None
    assert [e["id"] for e in json.loads(result.rejected.body)] == ["aud_007"]
    assert "document_parsing_exception: bad field" in result.rejected.detail
