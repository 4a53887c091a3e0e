"""The fast path agrees with the models: same bytes for good input, same field for bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from ulid import ULID

from auditrelay.schemas.builder import EventBuilder
from auditrelay.schemas.catalogue import DEFAULT_CATALOGUE
from auditrelay.schemas.codec import encode_event, parse_event, validate_event
from auditrelay.schemas.envelope import MAX_EVENT_BYTES, Actor, EventRules, Target
from auditrelay.schemas.errors import InvalidEventError

USER = Actor(id="usr_actor1", type="user")


@pytest.fixture
def builder() -> EventBuilder:
    return EventBuilder()


GOOD_CALLS: list[dict[str, Any]] = [
    {},
    {"actor": {"id": "svc_1", "type": "service_account"}},
    {"target": Target(type="workspace", id="ws_target1"), "subject": "ws_target1"},
    {"target": {"type": "github_installation", "id": "123"}, "description": "Zoë did it"},
    {"metadata": {"a": [1, 2.5, None, True, {"b": "é\u2028\x7f"}], "quote": "\"\\/\n"}},
    {"description": "", "metadata": {"": ""}},
    {"time": datetime(2026, 11, 25, 10, 30, 0, 123999, tzinfo=UTC)},
    {"actor": Actor(id="key with spaces & ünïcode", type="api_key")},
]


@pytest.mark.parametrize("extra", GOOD_CALLS)
def test_fast_path_bytes_are_the_canonical_bytes_of_a_valid_event(
    builder: EventBuilder, extra: dict[str, Any]
) -> None:
    kwargs: dict[str, Any] = {"actor": USER, **extra}
    built = builder.build("ws_xyz", "workspace", "created", **kwargs)
    event = parse_event(built.value)
    assert encode_event(event) == built.value
    assert event.id == built.id
    assert event.type == built.type == "pro.atmos.workspace.created"
    assert built.key == b"ws_xyz"
    assert dict(built.headers) == {
        "ce_id": built.id, "ce_type": built.type, "ce_workspaceid": "ws_xyz",
        "content-type": b"application/cloudevents+json",
    }


def test_id_and_time_are_assigned_and_agree(builder: EventBuilder) -> None:
    built = builder.build("ws_xyz", "lock", "acquired", actor=USER)
    event = parse_event(built.value)
    assert ULID.from_str(built.id.removeprefix("aud_")).milliseconds == \
        int(event.time.timestamp() * 1000)


def test_ids_increase_in_emission_order(builder: EventBuilder) -> None:
    ids = [builder.build("ws_xyz", "lock", "acquired", actor=USER).id for _ in range(500)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 500


def test_source_and_prefix_follow_the_configuration() -> None:
    custom = EventBuilder(type_prefix="com.example", source_base_url="https://x.example/base/")
    built = custom.build("ws_abc", "billing", "payment_failed", actor=USER)
    rules = EventRules(type_prefix="com.example", source_base_url="https://x.example/base")
    event = parse_event(built.value, rules)
    assert event.source == "https://x.example/base/workspaces/ws_abc"
    assert event.type == "com.example.billing.payment_failed"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"type_prefix": "Bad Prefix"}, "prefix"),
    ({"source_base_url": "ftp://x"}, "source base URL"),
])
def test_bad_configuration_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EventBuilder(**kwargs)


BAD_CALLS: list[tuple[dict[str, Any], str]] = [
    ({"actor": None}, "data.actor"),
    ({"actor": {"id": "x"}}, "data.actor"),
    ({"actor": {"id": "x", "type": "robot"}}, "data.actor.type"),
    ({"actor": {"id": "", "type": "user"}}, "data.actor.id"),
    ({"actor": {"id": "a\nb", "type": "user"}}, "data.actor.id"),
    ({"actor": "usr_1"}, "data.actor"),
    ({"workspace_id": "ws_Bad"}, "workspaceid"),
    ({"workspace_id": "ws_a\n"}, "workspaceid"),
    ({"workspace_id": ["ws_x"]}, "workspaceid"),
    ({"category": "workspace", "action": "exploded"}, "type"),
    ({"category": "Workspace"}, "data.action.category"),
    ({"action": "created!"}, "data.action.action"),
    ({"target": {"type": "workspace"}}, "data.target"),
    ({"target": {"type": "Work Space", "id": "x"}}, "data.target.type"),
    ({"target": {"type": "workspace", "id": "x" * 257}}, "data.target.id"),
    ({"target": 5}, "data.target"),
    ({"subject": ""}, "subject"),
    ({"description": "x" * 5000}, "data.description"),
    ({"description": 5}, "data.description"),
    ({"time": datetime(2026, 11, 25, 10, 30)}, "time"),
    ({"metadata": {"blob": "x" * (70 * 1024)}}, "data.metadata"),
    ({"metadata": {"x": object()}}, "data.metadata"),
    ({"metadata": {"x": float("inf")}}, "data.metadata"),
    ({"metadata": {"x": (1, 2)}}, "data.metadata"),
    ({"metadata": {2: "two"}}, "data.metadata"),
    ({"metadata": ["not", "a", "mapping"]}, "data.metadata"),
    ({"metadata": {"s": "\ud800"}}, "data"),
]


@pytest.mark.parametrize(("overrides", "field"), BAD_CALLS)
def test_bad_input_raises_invalid_event_error_naming_the_field(
    builder: EventBuilder, overrides: dict[str, Any], field: str
) -> None:
    args: dict[str, Any] = {"workspace_id": "ws_xyz", "category": "workspace",
                            "action": "created", "actor": USER, **overrides}
    with pytest.raises(InvalidEventError) as caught:
        builder.build(args.pop("workspace_id"), args.pop("category"), args.pop("action"),
                      **args)
    assert caught.value.field == field


def _model_input(**kwargs: Any) -> dict[str, Any]:
    """The same call expressed as an envelope for validate_event."""
    actor = kwargs.get("actor", USER)
    return {
        "specversion": "1.0", "id": "aud_01JD7Q0Z8N6Y0F3X5KQ2M1V9RT",
        "source": "https://app.atmos.pro/workspaces/ws_xyz",
        "type": f"pro.atmos.{kwargs.get('category', 'workspace')}."
                f"{kwargs.get('action', 'created')}",
        "time": "2026-11-25T10:30:00.000Z", "workspaceid": "ws_xyz",
        "data": {
            "actor": actor.model_dump() if isinstance(actor, Actor) else actor,
            "action": {"category": kwargs.get("category", "workspace"),
                       "action": kwargs.get("action", "created")},
            "target": kwargs.get("target"),
            "metadata": kwargs.get("metadata", {}),
        },
    }


@pytest.mark.parametrize(("overrides", "field"), [
    ({"actor": {"id": "x", "type": "robot"}}, "data.actor.type"),
    ({"category": "workspace", "action": "exploded"}, "type"),
    ({"target": {"type": "Work Space", "id": "x"}}, "data.target.type"),
    ({"metadata": {"x": float("inf")}}, "data.metadata"),
    ({"metadata": {"blob": "x" * (70 * 1024)}}, "data.metadata"),
])
def test_models_reach_the_same_verdict(builder: EventBuilder, overrides: dict[str, Any],
                                       field: str) -> None:
    with pytest.raises(InvalidEventError) as caught:
        validate_event(_model_input(**overrides))
    assert caught.value.field == field


def test_unknown_types_pass_when_allowed() -> None:
    relaxed = EventBuilder(allow_unknown_types=True)
    built = relaxed.build("ws_xyz", "workspace", "exploded", actor=USER)
    assert parse_event(built.value, EventRules(allow_unknown_types=True)).type.endswith(
        "workspace.exploded")


def test_every_catalogued_type_builds(builder: EventBuilder) -> None:
    for event_type in DEFAULT_CATALOGUE:
        built = builder.build("ws_xyz", event_type.category, event_type.action, actor=USER)
        assert parse_event(built.value).type == built.type


def test_the_size_limit_is_exact(builder: EventBuilder) -> None:
    base = len(builder.build("ws_xyz", "lock", "acquired", actor=USER,
                             metadata={"b": ""}).value)
    fits = builder.build("ws_xyz", "lock", "acquired", actor=USER,
                         metadata={"b": "x" * (MAX_EVENT_BYTES - base)})
    assert len(fits.value) == MAX_EVENT_BYTES
    with pytest.raises(InvalidEventError):
        builder.build("ws_xyz", "lock", "acquired", actor=USER,
                      metadata={"b": "x" * (MAX_EVENT_BYTES - base + 1)})


def test_caches_stay_bounded(builder: EventBuilder) -> None:
    for i in range(5000):
        builder.build(f"ws_{i}", "lock", "acquired", actor=Actor(id=f"usr_{i}", type="user"))
    assert len(builder._workspaces) <= 4096
    assert len(builder._actors) <= 4096
    assert json.loads(builder.build("ws_1", "lock", "acquired", actor=USER).value)
