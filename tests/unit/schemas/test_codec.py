"""parse_event and the canonical serialisation: the contract's example passes, the rest fails."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from auditrelay.schemas.codec import encode_event, event_to_dict, parse_event, validate_event
from auditrelay.schemas.envelope import MAX_EVENT_BYTES, EventRules
from auditrelay.schemas.errors import InvalidEventError

CONTRACT_EXAMPLE = b"""{
  "specversion": "1.0",
  "id": "aud_01JD7Q0Z8N6Y0F3X5KQ2M1V9RT",
  "source": "https://app.atmos.pro/workspaces/ws_xyz",
  "type": "pro.atmos.workspace.created",
  "time": "2026-11-25T10:30:00.000Z",
  "subject": "ws_target1",
  "datacontenttype": "application/json",
  "workspaceid": "ws_xyz",
  "data": {
    "actor":  {"id": "usr_actor1", "type": "user"},
    "action": {"category": "workspace", "action": "created"},
    "target": {"type": "workspace", "id": "ws_target1"},
    "description": null,
    "metadata": {}
  }
}"""


def example(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(CONTRACT_EXAMPLE)
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = event
        for part in path:
            node = node[part]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    return event


_DELETE = object()


def raw(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


def test_the_contracts_example_is_valid() -> None:
    event = parse_event(CONTRACT_EXAMPLE)
    assert event.id == "aud_01JD7Q0Z8N6Y0F3X5KQ2M1V9RT"
    assert event.time == datetime(2026, 11, 25, 10, 30, tzinfo=UTC)
    assert event.data.actor.type == "user"
    assert event.workspaceid == "ws_xyz"


def test_canonical_form_is_compact_and_round_trips() -> None:
    event = parse_event(CONTRACT_EXAMPLE)
    canonical = encode_event(event)
    assert canonical == json.dumps(json.loads(CONTRACT_EXAMPLE), separators=(",", ":")).encode()
    assert parse_event(canonical) == event


def test_non_ascii_is_written_as_utf8() -> None:
    event = parse_event(raw(example(data__description="Zoë créa l\u2019espace")))
    assert "Zoë créa l\u2019espace".encode() in encode_event(event)


def test_extension_attributes_are_kept_in_order_before_data() -> None:
    event = parse_event(raw({**example(), "traceparent": "00-abc-def-01", "partitionkey": 3}))
    assert event.extensions == {"traceparent": "00-abc-def-01", "partitionkey": 3}
    assert list(event_to_dict(event))[-3:] == ["traceparent", "partitionkey", "data"]


@pytest.mark.parametrize(("event", "field"), [
    (example(data__actor=_DELETE), "data.actor"),
    (example(data__actor__type="robot"), "data.actor.type"),
    (example(type="pro.atmos.workspace.exploded", data__action__action="exploded"), "type"),
    (example(type="pro.atmos.workspace.deleted"), "type"),
    (example(type="com.other.workspace.created"), "type"),
    (example(time="2026-11-25T10:30:00.000"), "time"),
    (example(time="2026-11-25T10:30:00.000+01:00"), "time"),
    (example(time="2026-11-25 10:30:00Z"), "time"),
    (example(time=1795635666), "time"),
    (example(time="2026-02-30T10:30:00Z"), "time"),
    (example(workspaceid="ws_XYZ"), "workspaceid"),
    (example(workspaceid="workspace-1"), "workspaceid"),
    (example(workspaceid="ws_xyz\n"), "workspaceid"),
    (example(id="aud_not-a-ulid"), "id"),
    (example(id=_DELETE), "id"),
    (example(specversion="0.3"), "specversion"),
    (example(source="https://app.atmos.pro/workspaces/ws_other"), "source"),
    (example(source="not a url/workspaces/ws_xyz"), "source"),
    (example(datacontenttype="text/plain"), "datacontenttype"),
    (example(data__metadata=[1, 2]), "data.metadata"),
    (example(data__surprise=1), "data.surprise"),
    (example(subject=""), "subject"),
    ({**example(), "Bad_Name": "x"}, "Bad_Name"),
    ({**example(), "averyveryverylongname1": "x"}, "averyveryverylongname1"),
    ({**example(), "nested": {"a": 1}}, "nested"),
    ({**example(), "data_base64": "AAAA"}, "data_base64"),
])
def test_malformed_events_raise_one_typed_error_naming_the_field(event: dict[str, Any],
                                                                 field: str) -> None:
    with pytest.raises(InvalidEventError) as caught:
        parse_event(raw(event))
    assert caught.value.field == field


@pytest.mark.parametrize("payload", [
    b"", b"not json", b"[]", b'"string"', b"\xff\xfe{}", b"{\"specversion\": \"1.0\"",
])
def test_garbage_raises_the_same_typed_error(payload: bytes) -> None:
    with pytest.raises(InvalidEventError):
        parse_event(payload)


def test_an_event_over_64_kib_is_refused_before_parsing() -> None:
    big = raw(example(data__metadata={"blob": "x" * MAX_EVENT_BYTES}))
    with pytest.raises(InvalidEventError, match="more than 65536"):
        parse_event(big)


def test_an_event_of_exactly_64_kib_passes() -> None:
    base = len(raw(example(data__metadata={"blob": ""})))
    exact = raw(example(data__metadata={"blob": "x" * (MAX_EVENT_BYTES - base)}))
    assert len(exact) == MAX_EVENT_BYTES
    parse_event(exact)


def test_unknown_types_pass_when_the_rules_allow_them() -> None:
    event = raw(example(type="pro.atmos.workspace.exploded", data__action__action="exploded"))
    assert parse_event(event, EventRules(allow_unknown_types=True)).type.endswith("exploded")


def test_rules_carry_the_prefix_and_the_source_base() -> None:
    rules = EventRules(type_prefix="com.example", source_base_url="https://app.atmos.pro")
    parse_event(raw(example(type="com.example.workspace.created")), rules)
    with pytest.raises(InvalidEventError) as caught:
        parse_event(raw(example(type="com.example.workspace.created",
                                source="https://evil.example/workspaces/ws_xyz")), rules)
    assert caught.value.field == "source"


def test_nanosecond_timestamps_are_accepted_and_plus_zero_offsets_too() -> None:
    assert parse_event(raw(example(time="2026-11-25T10:30:00.123456789Z"))).time.microsecond \
        == 123456
    assert parse_event(raw(example(time="2026-11-25T10:30:00+00:00"))).time.tzinfo is not None


def test_validate_event_takes_python_objects_and_refuses_naive_datetimes() -> None:
    good = example(time=datetime(2026, 11, 25, 10, 30, tzinfo=UTC))
    assert validate_event(good).time.year == 2026
    with pytest.raises(InvalidEventError) as caught:
        validate_event(example(time=datetime(2026, 11, 25, 10, 30)))
    assert caught.value.field == "time"
    with pytest.raises(InvalidEventError):
        validate_event(example(time=datetime(2026, 11, 25, 10, 30,
                                             tzinfo=timezone(timedelta(hours=2)))))


@pytest.mark.parametrize("metadata", [
    {"when": datetime(2026, 1, 1, tzinfo=UTC)}, {"x": float("nan")}, {"x": {1: "a"}},
    {"x": {"y": {1, 2}}}, {"x": b"bytes"},
])
def test_metadata_must_be_plain_json(metadata: dict[str, Any]) -> None:
    with pytest.raises(InvalidEventError) as caught:
        validate_event(example(data__metadata=metadata))
    assert caught.value.field == "data.metadata"
