"""The ``datadog_logs`` kind: intake hosts, log objects, limits, and every documented answer."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from auditrelay.schemas.errors import InvalidInputError
from auditrelay.wire.client import Reply
from auditrelay.wire.kinds import kind_named, kind_options
from auditrelay.wire.kinds.base import Batch, Request, Target
from auditrelay.wire.kinds.datadog import MAX_BYTES, SITES, Datadog, DatadogOptions
from tests.unit.wire.kinds.test_base import target as base_target

KEY = "0123456789abcdef0123456789abcdef"
KIND = Datadog()


def envelope(n: int, pad: int = 0) -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"aud_{n:04d}", "source": "https://app.example/workspaces/ws1",
            "type": "pro.atmos.auth.login_succeeded", "time": "2026-11-25T10:30:00.000Z",
            "subject": "usr_1", "datacontenttype": "application/json", "workspaceid": "ws1",
            "data": {"actor": {"id": "usr_1", "type": "user"},
                     "action": {"category": "auth", "action": "login_succeeded"},
                     "target": {"type": "user", "id": "usr_1"}, "description": None,
                     "metadata": {"pad": "x" * pad}}}


def batch_of(count: int, pad: int = 0) -> Batch:
    body = ("[" + ",".join(json.dumps(envelope(n, pad), separators=(",", ":"))
                           for n in range(count)) + "]").encode()
    return Batch(body, "msg_01", "ws1", count)


def target(options: DatadogOptions | None = None) -> Target:
    base = base_target(options or DatadogOptions())
    return type(base)(config=base.config, url="https://http-intake.logs.datadoghq.eu",
                      options=base.options, credentials={"api_key": KEY}, custom_headers={},
                      secrets=base.secrets, now=base.now, version="9.9")


# -- fields --------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [f"{base}/" for base in SITES.values()])
def test_every_documented_intake_is_accepted_without_its_slash(url: str) -> None:
    assert KIND.check_url(url) == url.rstrip("/")


@pytest.mark.parametrize("url", [
    "https://http-intake.logs.datadoghq.eu/api/v2/logs",     # a path
    "https://http-intake.logs.datadoghq.eu/?x=1",            # a query
    "https://http-intake.logs.datadoghq.eu:8443/",           # another port
    "https://datadoghq.eu/",                                 # the site, not its intake
    "https://http-intake.logs.datadoghq.eu.evil.example/",   # a look-alike
    "https://siem.example.com/",
    "http://http-intake.logs.datadoghq.com/",                # plain http (public host)
    "https://93.184.216.34/",                                # a public literal
])
def test_anything_else_is_refused_naming_url_and_listing_the_intakes(url: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        KIND.check_url(url)
    assert caught.value.field == "url"
    assert "https://http-intake.logs.datadoghq.com" in str(caught.value)


def test_a_private_literal_the_ssrf_rules_let_through_is_the_operators_choice() -> None:
    # Past the SSRF rules, 127.0.0.1 means AUDITRELAY_ALLOW_PRIVATE_CIDRS allowed it.
    assert KIND.check_url("http://127.0.0.1:8125/") == "http://127.0.0.1:8125"
    assert KIND.check_url("https://10.1.2.3/") == "https://10.1.2.3"
    with pytest.raises(InvalidInputError):
        KIND.check_url("http://127.0.0.1:8125/api/v2/logs")


def test_options_have_the_contracts_names_and_defaults() -> None:
    assert kind_options(KIND, {}) == {"service": None, "ddsource": "auditrelay",
                                      "ddtags": None, "hostname": None}
    with pytest.raises(InvalidInputError) as caught:
        kind_options(KIND, {"gzip": False})
    assert caught.value.field == "options.gzip"
    with pytest.raises(InvalidInputError) as caught:
        kind_options(KIND, {"ddtags": "env:prod, team:sec"})
    assert caught.value.field == "options.ddtags"


def test_the_api_key_is_required_and_the_only_credential() -> None:
    assert KIND.credentials.check({"api_key": KEY}, KIND.name) == {"api_key": KEY}
    for given, field in (({}, "credentials.api_key"), ({"api_key": KEY, "token": "x"},
                                                       "credentials.token")):
        with pytest.raises(InvalidInputError) as caught:
            KIND.credentials.check(given, KIND.name)
        assert caught.value.field == field
        assert KEY not in str(caught.value)
    assert kind_named("datadog_logs") is not None


# -- requests ------------------------------------------------------------------------------


def test_a_request_is_a_gzipped_array_of_log_objects_with_the_key_header() -> None:
    options = DatadogOptions(service="atmos", ddtags="env:prod,team:sec", hostname="relay-1")
    batch = batch_of(2)
    [request] = KIND.requests(batch, target(options), range(2))
    assert request.url == "https://http-intake.logs.datadoghq.eu/api/v2/logs"
    assert isinstance(request.headers, dict)
    assert request.headers["DD-API-KEY"] == KEY
    assert request.headers["Content-Encoding"] == "gzip"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Webhook-Id"] == "msg_01"
    logs = json.loads(gzip.decompress(request.body))
    assert [log["message"].encode() for log in logs] == [e.raw for e in batch.events]
    first = logs[0]
    assert first["ddsource"] == "auditrelay"
    assert (first["service"], first["ddtags"], first["hostname"]) == (
        "atmos", "env:prod,team:sec", "relay-1")
    assert first["audit"]["id"] == "aud_0000"
    assert first["audit"]["type"] == "pro.atmos.auth.login_succeeded"
    assert first["audit"]["actor"] == {"id": "usr_1", "type": "user"}
    assert first["audit"]["action"] == {"category": "auth", "action": "login_succeeded"}
    assert first["usr"] == {"id": "usr_1"}
    assert first["evt"] == {"name": "pro.atmos.auth.login_succeeded"}
    assert first["audit"].keys() == {"id", "source", "type", "time", "subject", "workspaceid",
                                     "actor", "action", "target"}
    assert not {"timestamp", "date", "source", "status", "host"} & first.keys()


def test_extension_attributes_are_facets_too_and_the_envelope_is_left_as_it_was() -> None:
    event = {**envelope(1), "traceparent": "00-abc-def-01", "sampled": True}
    batch = Batch(json.dumps([event], separators=(",", ":")).encode(), "msg_01", "ws1", 1)
    [request] = KIND.requests(batch, target(), range(1))
    [log] = json.loads(gzip.decompress(request.body))
    assert (log["audit"]["traceparent"], log["audit"]["sampled"]) == ("00-abc-def-01", True)
    assert not {"data", "specversion", "datacontenttype"} & log["audit"].keys()
    assert batch.events[0].data == event


def test_unset_options_are_left_out() -> None:
    [request] = KIND.requests(batch_of(1), target(), range(1))
    [log] = json.loads(gzip.decompress(request.body))
    assert not {"service", "ddtags", "hostname"} & log.keys()


def test_a_hundred_events_of_80_kb_are_cut_into_requests_under_5_mb() -> None:
    batch = batch_of(100, pad=80_000)
    requests = KIND.requests(batch, target(), range(100))
    sizes = [len(gzip.decompress(r.body)) for r in requests]
    assert len(requests) >= 2
    assert max(sizes) <= MAX_BYTES
    assert sorted(i for r in requests for i in r.events) == list(range(100))
    assert all(len(r.events) <= 1000 for r in requests)


def test_more_than_a_thousand_entries_are_cut_too() -> None:
    requests = KIND.requests(batch_of(2500), target(), range(2500))
    assert [len(r.events) for r in requests] == [1000, 1000, 500]


# -- answers -------------------------------------------------------------------------------

REQUEST = Request("https://x/api/v2/logs", b"", {}, (0, 1))


def _reply(status: int | None, body: bytes = b"", retry_after: float | None = None,
           error: str | None = None) -> Reply:
    return Reply(status, error, retry_after, body, 5)


def _errors(status: int, detail: str) -> bytes:
    return json.dumps({"errors": [{"status": str(status), "title": "t", "detail": detail}]}
                      ).encode()


def test_202_is_delivered() -> None:
    assert KIND.read(_reply(202, b"{}"), REQUEST).outcome == "delivered"


def test_400_dead_letters_with_datadogs_words() -> None:
    verdict = KIND.read(_reply(400, _errors(400, "malformed log entry")), REQUEST)
    assert verdict.outcome == "rejected"
    assert verdict.words == "Datadog refused the logs as malformed (HTTP 400): malformed log entry"


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_is_retried_as_api_key_rejected(status: int) -> None:
    verdict = KIND.read(_reply(status, _errors(status, "Forbidden")), REQUEST)
    assert verdict.outcome == "retry"
    assert verdict.words is not None
    assert verdict.words.startswith("API key rejected")


def test_413_splits() -> None:
    assert KIND.read(_reply(413, _errors(413, "too large")), REQUEST).outcome == "split"


@pytest.mark.parametrize(("reply", "after"), [
    (_reply(429, b"", 7.0), 7.0), (_reply(500, b"oops"), None), (_reply(503, b"", 3.0), 3.0),
    (_reply(408), None), (_reply(None, error="ConnectError: refused"), None),
])
def test_busy_and_broken_answers_are_retried(reply: Reply, after: float | None) -> None:
    verdict = KIND.read(reply, REQUEST)
    assert verdict.outcome == "retry"
    assert verdict.retry_after_seconds == after
    assert verdict.words


def test_words_never_name_the_key() -> None:
    for status in (400, 401, 403, 413, 429, 500):
        verdict = KIND.read(_reply(status, _errors(status, "nope")), REQUEST)
        assert KEY not in (verdict.words or "")
    assert KIND.accepted_words(1) == "Datadog accepted the log"
