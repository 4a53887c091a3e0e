"""The strict fakes of Splunk HEC and a Sumo Logic HTTP source refuse what the vendors
refuse, with the vendors' answers: a fake that took anything would prove nothing."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.receivers.splunk_hec import SplunkHecFake
from tests.support.receivers.sumo_logic import SOURCE_PATH, SumoLogicFake
from tests.support.servers import serve

TOKEN = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
CHANNEL = "11111111-2222-3333-4444-555555555555"
GOOD = b'{"time": 1795602600.123, "event": {"id": "aud_1"}, "fields": {"type": "x"}}'


@pytest.fixture
def hec() -> Iterator[tuple[SplunkHecFake, httpx.Client]]:
    fake = SplunkHecFake({TOKEN}, indexes={"audit"})
    with serve(fake) as url, httpx.Client(base_url=url) as client:
        yield fake, client


def post(client: httpx.Client, body: bytes, path: str = "/services/collector/event",
         **headers: str) -> tuple[int, dict[str, Any]]:
    sent = {"Authorization": f"Splunk {TOKEN}", **headers}
    response = client.post(path, content=body, headers=sent)
    return response.status_code, response.json()


@pytest.mark.parametrize(("body", "headers", "status", "answer"), [
    (GOOD + b"\n" + GOOD, {}, 200, {"text": "Success", "code": 0}),
    (GOOD, {"Authorization": ""}, 401, {"text": "Invalid authorization", "code": 3}),
    (GOOD, {"Authorization": f"Bearer {TOKEN}"}, 401,
     {"text": "Invalid authorization", "code": 3}),
    (GOOD, {"Authorization": "Splunk nope"}, 403, {"text": "Invalid token", "code": 4}),
    (b"", {}, 400, {"text": "No data", "code": 5}),
    (b"[" + GOOD + b"]", {}, 400,
     {"text": "Invalid data format", "code": 6, "invalid-event-number": 0}),
    (GOOD + b'{"time": "soon", "event": {}}', {}, 400,
     {"text": "Event field cannot be blank", "code": 13, "invalid-event-number": 1}),
    (GOOD + b'{"time": "soon", "event": {"a": 1}}', {}, 400,
     {"text": "Invalid data format", "code": 6, "invalid-event-number": 1}),
    (b'{"fields": {"a": 1}}', {}, 400,
     {"text": "Event field is required", "code": 12, "invalid-event-number": 0}),
    (b'{"event": {"a": 1}, "fields": {"a": {"b": 1}}}', {}, 400,
     {"text": "Error in handling indexed fields", "code": 15, "invalid-event-number": 0}),
    (b'{"event": {"a": 1}, "index": "main"}', {}, 400,
     {"text": "Incorrect index", "code": 7, "invalid-event-number": 0}),
    (b'{"event": {"a": 1}, "extra": 1}', {}, 400,
     {"text": "Invalid data format", "code": 6, "invalid-event-number": 0}),
    (GOOD, {"Content-Encoding": "gzip"}, 400, {"text": "Invalid data format", "code": 6}),
])
def test_the_fake_hec_answers_as_hec(hec: tuple[SplunkHecFake, httpx.Client], body: bytes,
                                     headers: dict[str, str], status: int,
                                     answer: dict[str, Any]) -> None:
    fake, client = hec
    assert post(client, body, **headers) == (status, answer)
    # As HEC does, the events before an invalid one are indexed.
    assert len(fake.indexed) == (2 if status == 200 else
                                 answer.get("invalid-event-number", 0))


def test_the_fake_hec_takes_gzip_refuses_too_much_and_other_paths(
        hec: tuple[SplunkHecFake, httpx.Client]) -> None:
    fake, client = hec
    assert post(client, gzip.compress(GOOD), **{"Content-Encoding": "gzip"})[0] == 200
    fake.max_content_length = 10
    assert post(client, GOOD)[0] == 413
    assert post(client, GOOD, path="/services/collector/raw")[0] == 404
    fake.disabled.add(TOKEN)
    assert post(client, GOOD) == (403, {"text": "Token disabled", "code": 1})


def test_the_fake_hec_with_acks_wants_a_channel_and_answers_acks(
        hec: tuple[SplunkHecFake, httpx.Client]) -> None:
    fake, client = hec
    assert post(client, GOOD, path="/services/collector/ack")[1]["code"] == 14
    fake.ack = True
    fake.ack_after = 1
    assert post(client, GOOD) == (400, {"text": "Data channel is missing", "code": 10})
    assert post(client, GOOD, **{"X-Splunk-Request-Channel": "abc"}) == (
        400, {"text": "Invalid data channel", "code": 11})
    status, answer = post(client, GOOD, **{"X-Splunk-Request-Channel": CHANNEL})
    assert (status, answer) == (200, {"text": "Success", "code": 0, "ackId": 0})
    ask = json.dumps({"acks": [0, 5]}).encode()
    channel = {"X-Splunk-Request-Channel": CHANNEL}
    assert post(client, ask, path="/services/collector/ack", **channel) == (
        200, {"acks": {"0": False, "5": False}})
    assert post(client, ask, path="/services/collector/ack", **channel) == (
        200, {"acks": {"0": True, "5": False}})
    other = {"X-Splunk-Request-Channel": CHANNEL.replace("1", "9")}
    assert post(client, ask, path="/services/collector/ack", **other)[1] == {
        "acks": {"0": False, "5": False}}


def test_the_fake_sumo_source_takes_gzipped_ndjson_within_a_megabyte() -> None:
    fake = SumoLogicFake()
    code = fake.new_source()
    lines = b'{"id": "aud_1"}\n{"id": "aud_2"}\n'
    with serve(fake) as url, httpx.Client(base_url=url) as client:
        def send(body: bytes, path: str = SOURCE_PATH + code, **headers: str) -> int:
            return client.post(path, content=body, headers=headers).status_code

        assert send(gzip.compress(lines), **{"Content-Encoding": "gzip",
                                             "X-Sumo-Category": "a/b"}) == 200
        assert [m.line for m in fake.messages] == [b'{"id": "aud_1"}', b'{"id": "aud_2"}']
        assert {m.category for m in fake.messages} == {"a/b"}
        assert send(lines, path=SOURCE_PATH + "nope") == 401
        assert send(lines, path="/receiver/v1/otlp/x") == 404
        assert send(b"not json\n") == 400
        assert send(lines, **{"Content-Encoding": "gzip"}) == 400
        assert send(lines, **{"Content-Type": "application/vnd.sumologic.carbon2"}) == 400
        assert send(gzip.compress(b'{"p": "' + b"x" * 1_000_000 + b'"}\n'),
                    **{"Content-Encoding": "gzip"}) == 413
        assert client.get(SOURCE_PATH + code).status_code == 405
        fake.throttle = 1
        throttled = client.post(SOURCE_PATH + code, content=lines)
        assert (throttled.status_code, throttled.headers["retry-after"]) == (429, "1")
        fake.delete(code)
        assert send(lines) == 401
    assert len(fake.messages) == 2
