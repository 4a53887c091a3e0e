"""The ``sumo_logic`` kind: NDJSON, always gzip, metadata headers, every documented answer."""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from typing import Any

import pytest

from auditrelay.schemas.errors import InvalidInputError
from auditrelay.wire.client import Reply
from auditrelay.wire.kinds import kind_named, kind_options
from auditrelay.wire.kinds.base import Batch, Request, Target
from auditrelay.wire.kinds.sumo_logic import MAX_BYTES, SumoLogic, SumoLogicOptions
from tests.unit.wire.kinds.test_base import target
from tests.unit.wire.kinds.test_splunk_hec import envelope

SUMO = SumoLogic()
SOURCE_URL = "https://endpoint4.collection.sumologic.com/receiver/v1/http/ZaVnC4dhaV3_secret=="


def sumo_target(**options: Any) -> Target:
    base = target(SumoLogicOptions(**options))
    return Target(config=base.config, url=SOURCE_URL, options=base.options, credentials={},
                  custom_headers={}, secrets=base.secrets, now=base.now, version="9.9")


def sumo_batch(n: int, **changes: Any) -> Batch:
    body = "[" + ",".join(json.dumps({**envelope(i), **changes}, separators=(",", ":"))
                          for i in range(n)) + "]"
    return Batch(body.encode(), "msg_01", "ws1", n)


def plain_headers(request: Request) -> Mapping[str, str]:
    headers = request.headers
    return headers() if callable(headers) else headers


# -- fields --------------------------------------------------------------------------------


def test_the_url_is_the_http_sources_own() -> None:
    assert SUMO.check_url(SOURCE_URL) == SOURCE_URL


@pytest.mark.parametrize("url", [
    "https://endpoint4.collection.sumologic.com",
    "https://endpoint4.collection.sumologic.com/receiver/v1/http/",
    "https://endpoint4.collection.sumologic.com/receiver/v1/otlp/abc",
    "https://endpoint4.collection.sumologic.com/receiver/v1/http/abc/def",
    "https://endpoint4.collection.sumologic.com/receiver/v1/http/abc?x=1",
])
def test_another_url_is_refused_naming_url_and_not_quoting_it(url: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        SUMO.check_url(url)
    assert caught.value.field == "url"
    assert "abc" not in str(caught.value)


def test_options_are_the_three_metadata_headers() -> None:
    assert kind_options(kind_named("sumo_logic"), {"category": "prod/atmos/audit"}) == {
        "category": "prod/atmos/audit", "source_name": None, "source_host": None}
    for raw, field in (({"gzip": True}, "options.gzip"),
                       ({"category": "a\r\nX-Evil: 1"}, "options.category"),
                       ({"source_host": "h" * 2000}, "options.source_host")):
        with pytest.raises(InvalidInputError) as caught:
            kind_options(SUMO, raw)
        assert caught.value.field == field


def test_there_are_no_credentials_the_url_is_one() -> None:
    assert SUMO.credentials.check({}, "sumo_logic") == {}
    with pytest.raises(InvalidInputError) as caught:
        SUMO.credentials.check({"token": "x"}, "sumo_logic")
    assert caught.value.field == "credentials.token"


# -- requests ------------------------------------------------------------------------------


def test_events_go_one_per_line_gzipped_with_the_metadata_headers() -> None:
    batch = sumo_batch(3)
    [request] = SUMO.requests(batch, sumo_target(category="prod/audit", source_name="atmos",
                                                 source_host="eu-1"), range(3))
    assert request.url == SOURCE_URL
    lines = gzip.decompress(request.body).split(b"\n")
    assert lines[-1] == b""
    assert lines[:-1] == [event.raw for event in batch.events]
    headers = plain_headers(request)
    assert headers["Content-Encoding"] == "gzip"
    assert headers["X-Sumo-Category"] == "prod/audit"
    assert headers["X-Sumo-Name"] == "atmos"
    assert headers["X-Sumo-Host"] == "eu-1"
    assert headers["X-Webhook-Id"] == "msg_01"
    assert headers["Content-Type"] == "application/x-ndjson"
    assert "secret" not in repr(request)


def test_unset_options_send_no_metadata_headers() -> None:
    [request] = SUMO.requests(sumo_batch(1), sumo_target(), range(1))
    assert not [name for name in plain_headers(request) if name.startswith("X-Sumo-")]


def test_an_envelope_with_newlines_inside_still_is_one_line() -> None:
    body = b'[{"id": "aud_1",\n "type": "x"}]'
    [request] = SUMO.requests(Batch(body, "msg_01", "ws1", 1), sumo_target(), range(1))
    [line, rest] = gzip.decompress(request.body).split(b"\n")
    assert rest == b""
    assert json.loads(line) == {"id": "aud_1", "type": "x"}


def test_requests_stay_within_a_megabyte_uncompressed() -> None:
    batch = sumo_batch(40, pad="x" * 60_000)
    requests = SUMO.requests(batch, sumo_target(), range(40))
    assert len(requests) > 1
    assert all(len(gzip.decompress(r.body)) <= MAX_BYTES for r in requests)
    assert [i for r in requests for i in r.events] == list(range(40))


# -- answers -------------------------------------------------------------------------------

REQUEST = Request(SOURCE_URL, b"", {}, (0,))


@pytest.mark.parametrize(("status", "outcome", "words"), [
    (200, "delivered", None),
    (401, "retry", "HTTP 401: Sumo Logic does not know this HTTP source URL: the source was "
                   "deleted or its URL regenerated; put the source's current URL on the "
                   "destination"),
    (404, "retry", "HTTP 404: Sumo Logic does not know this HTTP source URL: the source was "
                   "deleted or its URL regenerated; put the source's current URL on the "
                   "destination"),
    (408, "retry", "HTTP 408: Sumo Logic timed out processing the request; it is sent again"),
    (413, "split", "HTTP 413: Sumo Logic refused the request as too large"),
    (429, "retry", "HTTP 429: Sumo Logic is throttling this source (the account's ingestion "
                   "quota)"),
    (503, "retry", "HTTP 503: Sumo Logic is unavailable"),
    (504, "retry", "HTTP 504: Sumo Logic is unavailable"),
    (400, "retry", "HTTP 400"),
    (302, "retry", "HTTP 302: redirect not followed"),
])
def test_answers_are_read_as_sumo_documents_them(status: int, outcome: str,
                                                 words: str | None) -> None:
    verdict = SUMO.read(Reply(status, None, None, b"", 3), REQUEST)
    assert (verdict.outcome, verdict.words) == (outcome, words)


def test_throttling_honours_retry_after_and_no_answer_is_retried() -> None:
    assert SUMO.read(Reply(429, None, 30.0, b"", 3), REQUEST).retry_after_seconds == 30.0
    verdict = SUMO.read(Reply(None, "ConnectError: refused", None, b"", 3), REQUEST)
    assert (verdict.outcome, verdict.words) == ("retry", "ConnectError: refused")


def test_a_test_send_says_sumo_logic_took_it() -> None:
    assert SUMO.accepted_words(1) == "Sumo Logic accepted the event"
