"""The ``splunk_hec`` kind: HEC objects, token auth, every documented answer, acks."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from auditrelay.schemas.errors import InvalidInputError
from auditrelay.wire.client import Reply
from auditrelay.wire.kinds import kind_named, kind_options
from auditrelay.wire.kinds.base import Batch, FollowUp, Request, Target, Verdict
from auditrelay.wire.kinds.send import Pacer, send_batch
from auditrelay.wire.kinds.splunk_hec import (
    ACK_WAIT_SECONDS,
    HecRequest,
    SplunkHec,
    SplunkHecOptions,
    epoch_seconds,
)
from tests.unit.wire.kinds.test_base import target

HEC = SplunkHec()


def envelope(n: int, *, category: str = "auth", action: str = "login_succeeded",
             time: str = "2026-11-25T10:30:00.123Z") -> dict[str, Any]:
    return {"specversion": "1.0", "id": f"aud_{n}", "source": "https://app/workspaces/ws1",
            "type": f"pro.atmos.{category}.{action}", "time": time, "workspaceid": "ws1",
            "data": {"actor": {"id": "usr_1", "type": "user"},
                     "action": {"category": category, "action": action}, "metadata": {"n": n}}}


def hec_batch(n: int) -> Batch:
    body = "[" + ",".join(json.dumps(envelope(i), separators=(",", ":")) for i in range(n)) + "]"
    return Batch(body.encode(), "msg_01", "ws1", n)


def hec_target(**options: Any) -> Target:
    base = target(SplunkHecOptions(**options))
    return Target(config=base.config, url="https://splunk.example:8088", options=base.options,
                  credentials={"token": "11111111-2222-3333-4444-555555555555"},
                  custom_headers={"X-Tenant": "acme"}, secrets=base.secrets, now=base.now,
                  version="9.9")


def objects(body: bytes) -> list[dict[str, Any]]:
    """Concatenated JSON objects, as HEC reads them."""
    decoder = json.JSONDecoder()
    text, position, found = body.decode(), 0, []
    while position < len(text):
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            break
        value, position = decoder.raw_decode(text, position)
        found.append(value)
    return found


def plain_headers(request: Request) -> Mapping[str, str]:
    headers = request.headers
    return headers() if callable(headers) else headers


# -- fields --------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["https://splunk.example:8088",
                                 "https://splunk.example:8088/"])
def test_the_url_is_the_collectors_base(url: str) -> None:
    assert HEC.check_url(url) == "https://splunk.example:8088"


@pytest.mark.parametrize("url", ["https://splunk.example:8088/services/collector/event",
                                 "https://splunk.example:8088/?token=x",
                                 "https://splunk.example:8088/#x"])
def test_a_url_with_a_path_or_query_is_refused_naming_url(url: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        HEC.check_url(url)
    assert caught.value.field == "url"
    assert "token=x" not in str(caught.value)


def test_options_default_to_the_json_sourcetype() -> None:
    assert kind_options(kind_named("splunk_hec"), {}) == {
        "index": None, "source": None, "sourcetype": "_json", "host": None, "gzip": False,
        "ack": False}


@pytest.mark.parametrize(("raw", "field"), [
    ({"index": "Main"}, "options.index"),
    ({"index": "_internal"}, "options.index"),
    ({"index": "a" * 81}, "options.index"),
    ({"host": "evil\r\nX: y"}, "options.host"),
    ({"sourcetype": ""}, "options.sourcetype"),
    ({"ack": "maybe"}, "options.ack"),
    ({"channel": "x"}, "options.channel"),
])
def test_bad_options_are_refused_naming_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        kind_options(HEC, raw)
    assert caught.value.field == field


def test_the_token_is_the_one_credential_and_required() -> None:
    assert HEC.credentials.check({"token": "abc-123"}, "splunk_hec") == {"token": "abc-123"}
    for given, field in (({}, "credentials.token"), ({"api_key": "x"}, "credentials.api_key")):
        with pytest.raises(InvalidInputError) as caught:
            HEC.credentials.check(given, "splunk_hec")
        assert caught.value.field == field


# -- requests ------------------------------------------------------------------------------


def test_events_become_concatenated_hec_objects_with_indexed_fields() -> None:
    batch = hec_batch(3)
    [request] = HEC.requests(batch, hec_target(index="audit", source="auditrelay",
                                               host="atmos"), range(3))
    assert request.url == "https://splunk.example:8088/services/collector/event"
    found = objects(request.body)
    assert [o["event"]["id"] for o in found] == ["aud_0", "aud_1", "aud_2"]
    first = found[0]
    assert first["time"] == 1795602600.123
    assert first["index"] == "audit"
    assert first["source"] == "auditrelay"
    assert first["sourcetype"] == "_json"
    assert first["host"] == "atmos"
    assert first["fields"] == {"type": "pro.atmos.auth.login_succeeded", "category": "auth",
                               "workspace": "ws1"}
    # The envelope's bytes are kept as produced inside each object.
    for event in batch.events:
        assert event.raw in request.body
    assert b"\n" in request.body
    assert not request.body.startswith(b"[")


def test_unset_options_are_left_out_and_a_time_without_milliseconds_is_kept() -> None:
    body = json.dumps([envelope(0, time="2026-11-25T10:30:00Z")]).encode()
    [request] = HEC.requests(Batch(body, "msg_01", "ws1", 1), hec_target(), range(1))
    [found] = objects(request.body)
    assert set(found) == {"time", "sourcetype", "fields", "event"}
    assert found["time"] == 1795602600.0


@pytest.mark.parametrize(("value", "seconds"), [
    ("2026-11-25T10:30:00.123Z", 1795602600.123),
    ("2026-11-25T11:30:00.5+01:00", 1795602600.5),
    ("2026-11-25T10:30:00", None), ("soon", None), (None, None), (17, None)])
def test_epoch_seconds_have_milliseconds(value: object, seconds: float | None) -> None:
    assert epoch_seconds(value) == seconds


def test_the_token_goes_in_the_splunk_authorization_header() -> None:
    [request] = HEC.requests(hec_batch(1), hec_target(), range(1))
    headers = plain_headers(request)
    assert headers["Authorization"] == "Splunk 11111111-2222-3333-4444-555555555555"
    assert headers["X-Webhook-Id"] == "msg_01"
    assert headers["X-Tenant"] == "acme"
    assert headers["Content-Type"] == "application/json"
    assert "X-Splunk-Request-Channel" not in headers
    assert "token" not in repr(request)
    assert "5555" not in repr(request)


def test_gzip_compresses_the_body() -> None:
    batch = hec_batch(2)
    [plain] = HEC.requests(batch, hec_target(), range(2))
    [packed] = HEC.requests(batch, hec_target(gzip=True), range(2))
    assert gzip.decompress(packed.body) == plain.body
    assert plain_headers(packed)["Content-Encoding"] == "gzip"


def test_with_ack_requests_carry_a_channel_stable_per_destination() -> None:
    batch = hec_batch(1)
    [first] = HEC.requests(batch, hec_target(ack=True), range(1))
    [second] = HEC.requests(batch, hec_target(ack=True), range(1))
    channel = plain_headers(first)["X-Splunk-Request-Channel"]
    assert len(channel) == 36
    assert channel.count("-") == 4
    assert plain_headers(second)["X-Splunk-Request-Channel"] == channel
    assert isinstance(first, HecRequest)
    assert first.ack_url == "https://splunk.example:8088/services/collector/ack"
    assert first.ack_headers["X-Splunk-Request-Channel"] == channel


def test_large_batches_are_cut_below_a_megabyte() -> None:
    big = envelope(0)
    big["data"]["metadata"] = {"pad": "x" * 60_000}
    body = json.dumps([{**big, "id": f"aud_{i}"} for i in range(40)]).encode()
    requests = HEC.requests(Batch(body, "msg_01", "ws1", 40), hec_target(), range(40))
    assert len(requests) > 1
    assert all(len(r.body) <= 1_000_000 for r in requests)
    assert sum(len(r.events) for r in requests) == 40


# -- answers -------------------------------------------------------------------------------


def request_of(n: int, **options: Any) -> Request:
    [request] = HEC.requests(hec_batch(n), hec_target(**options), range(n))
    return request


def answer(status: int, body: dict[str, Any] | None = None, after: float | None = None,
           ) -> Reply:
    return Reply(status, None, after, json.dumps(body).encode() if body else b"", 4)


@pytest.mark.parametrize(("reply", "outcome", "words"), [
    (answer(200, {"text": "Success", "code": 0}), "delivered", None),
    (answer(403, {"text": "Invalid token", "code": 4}), "retry",
     "token rejected by Splunk HEC: Invalid token (HTTP 403, code 4)"),
    (answer(403, {"text": "Token disabled", "code": 1}), "retry",
     "token rejected by Splunk HEC: Token disabled (HTTP 403, code 1)"),
    (answer(401, {"text": "Token is required", "code": 2}), "retry",
     "token rejected by Splunk HEC: Token is required (HTTP 401, code 2)"),
    (answer(401, {"text": "Invalid authorization", "code": 3}), "retry",
     "token rejected by Splunk HEC: Invalid authorization (HTTP 401, code 3)"),
    (answer(400, {"text": "No data", "code": 5}), "rejected",
     "Splunk HEC refused the events: No data (HTTP 400, code 5)"),
    (answer(400, {"text": "Invalid data format", "code": 6}), "rejected",
     "Splunk HEC refused the events: Invalid data format (HTTP 400, code 6)"),
    (answer(400, {"text": "Event field is required", "code": 12}), "rejected",
     "Splunk HEC refused the events: Event field is required (HTTP 400, code 12)"),
    (answer(400, {"text": "Incorrect index", "code": 7}), "retry",
     "Splunk HEC refused the request: Incorrect index (HTTP 400, code 7); the token may not "
     "write to this index (check the option index)"),
    (answer(400, {"text": "Data channel is missing", "code": 10}), "retry",
     "Splunk HEC refused the request: Data channel is missing (HTTP 400, code 10); the token "
     "uses indexer acknowledgement: turn the option ack on"),
    (answer(400, {"text": "ACK is disabled", "code": 14}), "retry",
     "Splunk HEC refused the request: ACK is disabled (HTTP 400, code 14); the token does not "
     "use indexer acknowledgement: turn the option ack off"),
    (answer(503, {"text": "Server is busy", "code": 9}), "retry",
     "Splunk HEC is busy: Server is busy (HTTP 503, code 9)"),
    (answer(500, {"text": "Internal server error", "code": 8}), "retry",
     "Splunk HEC answered Internal server error (HTTP 500, code 8)"),
    (answer(502), "retry", "Splunk HEC answered HTTP 502"),
    (answer(404), "retry", "Splunk HEC answered HTTP 404"),
    (answer(413), "split", "Splunk HEC refused the request as too large: HTTP 413"),
    (Reply(None, "ConnectError: refused", None, b"", 3), "retry", "ConnectError: refused"),
])
def test_answers_are_read_as_splunk_documents_them(reply: Reply, outcome: str,
                                                   words: str | None) -> None:
    verdict = HEC.read(reply, request_of(2))
    assert (verdict.outcome, verdict.words) == (outcome, words)


def test_busy_honours_retry_after() -> None:
    verdict = HEC.read(answer(503, {"text": "Server is busy", "code": 9}, after=7.0),
                       request_of(1))
    assert verdict.retry_after_seconds == 7.0


def test_the_event_hec_names_is_refused_and_the_others_sent_again() -> None:
    reply = answer(400, {"text": "Invalid data format", "code": 6, "invalid-event-number": 2})
    verdict = HEC.read(reply, request_of(4))
    assert verdict.outcome == "delivered"
    assert verdict.retry_items == (0, 1, 3)
    assert verdict.rejected_items == (
        (2, "Splunk HEC refused the event: Invalid data format (HTTP 400, code 6)"),)
    assert "event 2 of 4" in (verdict.words or "")


def test_an_event_number_out_of_range_refuses_the_whole_request() -> None:
    reply = answer(400, {"text": "Invalid data format", "code": 6, "invalid-event-number": 9})
    assert HEC.read(reply, request_of(2)).outcome == "rejected"


def test_words_never_hold_more_than_200_characters_of_the_answer() -> None:
    verdict = HEC.read(answer(503, {"text": "busy " * 200, "code": 9}), request_of(1))
    assert len(verdict.words or "") < 300


# -- indexer acknowledgement ---------------------------------------------------------------


def test_without_ack_an_ack_id_is_ignored() -> None:
    verdict = HEC.read(answer(200, {"text": "Success", "code": 0, "ackId": 3}), request_of(1))
    assert verdict == Verdict("delivered")


def test_with_ack_but_no_ack_id_the_200_is_final() -> None:
    verdict = HEC.read(answer(200, {"text": "Success", "code": 0}), request_of(1, ack=True))
    assert verdict == Verdict("delivered")


def test_with_ack_the_answer_asks_for_the_acknowledgement() -> None:
    request = request_of(2, ack=True)
    verdict = HEC.read(answer(200, {"text": "Success", "code": 0, "ackId": 7}), request)
    follow_up = verdict.follow_up
    assert follow_up is not None
    assert follow_up.request.url == "https://splunk.example:8088/services/collector/ack"
    assert json.loads(follow_up.request.body) == {"acks": [7]}
    headers = plain_headers(follow_up.request)
    assert headers["Authorization"].startswith("Splunk ")
    assert headers["X-Splunk-Request-Channel"] == plain_headers(request)[
        "X-Splunk-Request-Channel"]
    assert follow_up.delay_seconds > 0


def ack_follow_up(**changes: Any) -> FollowUp:
    request = request_of(1, ack=True)
    verdict = HEC.read(answer(200, {"text": "Success", "code": 0, "ackId": 7}), request)
    assert verdict.follow_up is not None
    values = {"request": verdict.follow_up.request,
              "delay_seconds": verdict.follow_up.delay_seconds, "state": 7, **changes}
    return FollowUp(**values)


def test_an_ack_that_says_true_delivers() -> None:
    verdict = HEC.read_follow_up(answer(200, {"acks": {"7": True}}), ack_follow_up(),
                                 request_of(1, ack=True))
    assert verdict == Verdict("delivered")


def test_an_ack_that_says_false_asks_again_later_with_a_longer_wait() -> None:
    first = ack_follow_up()
    verdict = HEC.read_follow_up(answer(200, {"acks": {"7": False}}), first,
                                 request_of(1, ack=True))
    assert verdict.follow_up is not None
    assert verdict.follow_up.delay_seconds == first.delay_seconds * 2
    assert verdict.follow_up.waited_seconds == first.delay_seconds


def test_an_ack_never_true_within_the_bound_sends_the_request_again() -> None:
    verdict = HEC.read_follow_up(answer(200, {"acks": {"7": False}}),
                                 ack_follow_up(delay_seconds=2.0, waited_seconds=9.0),
                                 request_of(1, ack=True))
    assert verdict.outcome == "retry"
    assert "did not confirm indexing within 10 s" in (verdict.words or "")


def test_an_ack_query_refused_sends_the_request_again() -> None:
    verdict = HEC.read_follow_up(answer(400, {"text": "Invalid data channel", "code": 11}),
                                 ack_follow_up(), request_of(1, ack=True))
    assert verdict.outcome == "retry"
    assert "Invalid data channel" in (verdict.words or "")


@pytest.mark.asyncio
async def test_an_attempt_with_ack_waits_for_it_and_is_bounded() -> None:
    """Through ``send_batch``: acks that never come end in a retry after about 10 s of
    (fake) waiting, with the acknowledgement asked several times."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    class Never:
        def __init__(self) -> None:
            self.sent: list[str] = []

        async def request(self, url: str, body: bytes,
                          headers: Mapping[str, str] | Callable[[], Mapping[str, str]],
                          ) -> Reply:
            self.sent.append(url.rsplit("/", 1)[-1])
            if url.endswith("/ack"):
                return answer(200, {"acks": {"0": False}})
            return answer(200, {"text": "Success", "code": 0, "ackId": 0})

    poster = Never()
    result = await send_batch(poster, HEC, hec_target(ack=True), hec_batch(2),
                              Pacer(sleep=sleep))
    assert not result.ok
    assert poster.sent[0] == "event"
    assert set(poster.sent[1:]) == {"ack"}
    assert len(poster.sent) > 4
    assert sum(slept) <= ACK_WAIT_SECONDS
    assert sum(slept) > ACK_WAIT_SECONDS / 2
