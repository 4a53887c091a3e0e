"""The kinds' shared parts: batches split into events, credentials, options, limits."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import ClassVar

import pytest

from auditrelay.schemas.destinations import DestinationConfig
from auditrelay.schemas.errors import InvalidInputError
from auditrelay.wire.client import Reply
from auditrelay.wire.kinds import KINDS, kind_named, kind_options
from auditrelay.wire.kinds.base import (
    Batch,
    Credentials,
    Kind,
    KindOptions,
    Limits,
    Request,
    Target,
    Verdict,
    _split_canonical,
    _split_spans,
    answer_text,
)

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def events_body(*sizes: int) -> bytes:
    return ("[" + ", ".join(json.dumps({"id": f"aud_{i}", "pad": "x" * size})
                             for i, size in enumerate(sizes)) + "]").encode()


def target(options: KindOptions | None = None) -> Target:
    config = DestinationConfig(id="dst_1", workspace_id="ws1", name="n", url_encrypted="v1:x",
                               enabled=True, secret_encrypted="v1:s", version=1,
                               updated_at=NOW)
    return Target(config=config, url="https://rx.example/in", options=options or KindOptions(),
                  credentials={"token": "t0k"}, custom_headers={"X-Tenant": "acme"},
                  secrets=lambda at: [], now=lambda: NOW, version="9.9")


class ToyOptions(KindOptions):
    gzip: bool = False
    index: str = "main"


class Toy(Kind):
    name: ClassVar[str] = "toy"
    label: ClassVar[str] = "Toy"
    Options: ClassVar[type[KindOptions]] = ToyOptions
    limits: ClassVar[Limits] = Limits(max_events=3, max_bytes=250)

    def body(self, batch: Batch, target: Target, events: Sequence[int]) -> bytes:
        return batch.part(events)

    def read(self, reply: Reply, request: Request) -> Verdict:
        return Verdict("delivered")


def test_a_batch_keeps_each_events_bytes_as_produced() -> None:
    body = b'[ {"id": "aud_1", "n": 1} ,\n{"id":"aud_2","s":"\\u00e9 ]"}]'
    batch = Batch(body, "msg_1", "ws1", 2)
    assert [event.raw for event in batch.events] == [b'{"id": "aud_1", "n": 1}',
                                                     b'{"id":"aud_2","s":"\\u00e9 ]"}']
    assert batch.events[1].data["s"] == "\u00e9 ]"
    assert batch.events[0].field("id") == "aud_1"
    assert batch.events[0].field("data", "actor", "id") is None
    assert batch.part([1]) == b'[{"id":"aud_2","s":"\\u00e9 ]"}]'
    assert json.loads(batch.part([0, 1])) == json.loads(body)


@pytest.mark.parametrize("body", [b'{"id": 1}', b'[{"id": 1} {"id": 2}]', b"[1, ", b""])
def test_a_body_that_is_no_json_array_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError, match=r"JSON|Expecting|Extra|delimiter|array"):
        _ = Batch(body, "msg_1", "ws1", 1).events


def test_a_canonical_batch_is_split_by_the_fast_path_with_the_same_bytes() -> None:
    raws = [b'{"id":"aud_1","n":1.5,"s":"\xc3\xa9 \\"]},{"}',
            b'{"id":"aud_2","l":[{"a":1},{"b":2}]}']
    body = b"[" + b",".join(raws) + b"]"
    fast = _split_canonical(body)
    assert fast is not None
    slow = _split_spans(body)
    assert [event.raw for event in fast] == raws == [event.raw for event in slow]
    assert fast[0].data["s"] == '\u00e9 "]},{'


@pytest.mark.parametrize("raw", [
    b'{"id": "aud_1"}',                # spaces
    b'{"id":"\\u00e9"}',              # an escape orjson would not write
    b'{"n":1e2}',                      # another float form
    b'{"n":123456789012345678901234}',  # beyond 64 bits: orjson refuses it
    b'{"a":1,"a":2}',                  # a repeated name
])
def test_a_batch_written_otherwise_takes_the_slow_path_and_keeps_its_bytes(raw: bytes) -> None:
    body = b'[{"id":"aud_0"},' + raw + b"]"
    assert _split_canonical(body) is None
    assert [event.raw for event in Batch(body, "m", "ws1", 2).events] == [b'{"id":"aud_0"}', raw]


def test_an_empty_batch_has_no_events() -> None:
    assert Batch(b" [ ] ", "msg_1", "ws1", 0).events == []


def test_requests_keep_within_the_event_and_byte_limits() -> None:
    batch = Batch(events_body(10, 10, 10, 10, 10, 10, 10, 220), "msg_1", "ws1", 8)
    requests = Toy().requests(batch, target(), range(8))
    assert [r.events for r in requests] == [(0, 1, 2), (3, 4, 5), (6,), (7,)]
    assert all(len(r.body) <= 250 for r in requests[:3])
    assert sorted(i for r in requests for i in r.events) == list(range(8))


def test_one_event_larger_than_the_limit_is_still_sent_alone() -> None:
    batch = Batch(events_body(400), "msg_1", "ws1", 1)
    [request] = Toy().requests(batch, target(), range(1))
    assert request.events == (0,)
    assert len(request.body) > 250


def test_gzip_compresses_the_body_and_says_so() -> None:
    batch = Batch(events_body(10), "msg_1", "ws1", 1)
    [request] = Toy().requests(batch, target(ToyOptions(gzip=True)), range(1))
    assert gzip.decompress(request.body) == batch.part([0])
    assert isinstance(request.headers, dict)
    assert request.headers["Content-Encoding"] == "gzip"
    assert request.headers["X-Tenant"] == "acme"
    assert request.headers["X-Webhook-Id"] == "msg_1"


def test_credentials_are_checked_by_name_value_and_required_set() -> None:
    spec = Credentials(("api_key", "username", "password"),
                       (frozenset({"api_key"}), frozenset({"username", "password"})))
    assert spec.check({"api_key": "k"}, "es") == {"api_key": "k"}
    assert spec.check({"username": "u", "password": "p"}, "es")
    with pytest.raises(InvalidInputError) as missing:
        spec.check({"username": "u"}, "es")
    assert "api_key or password and username" in str(missing.value)
    with pytest.raises(InvalidInputError) as unknown:
        spec.check({"token": "sekrit-value"}, "es")
    assert unknown.value.field == "credentials.token"
    with pytest.raises(InvalidInputError) as spaced:
        spec.check({"api_key": "sekrit value"}, "es")
    assert spaced.value.field == "credentials.api_key"
    for error in (unknown.value, spaced.value):
        assert "sekrit" not in str(error)


def test_options_are_validated_with_defaults_and_unknown_names_refused() -> None:
    assert kind_options(Toy(), {}) == {"gzip": False, "index": "main"}
    with pytest.raises(InvalidInputError) as unknown:
        kind_options(Toy(), {"indx": "a"})
    assert unknown.value.field == "options.indx"
    assert "takes no such option (it takes: gzip, index)" in str(unknown.value)
    with pytest.raises(InvalidInputError) as wrong:
        kind_options(Toy(), {"gzip": "perhaps"})
    assert wrong.value.field == "options.gzip"


def test_kinds_are_looked_up_by_name() -> None:
    assert kind_named("webhook") is KINDS["webhook"]
    with pytest.raises(InvalidInputError) as unknown:
        kind_named("carrier_pigeon")
    assert unknown.value.field == "kind"
    assert "webhook" in str(unknown.value)


def test_answer_text_is_one_short_line() -> None:
    reply = Reply(400, None, None, b'{"text":"Invalid\n data format","code":6}' + b"x" * 500, 3)
    text = answer_text(reply)
    assert "\n" not in text
    assert len(text) <= 200
    assert text.startswith('{"text":"Invalid data')
