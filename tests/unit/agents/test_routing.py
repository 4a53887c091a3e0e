"""auditrelay.agents.routing: record checks, batching per destination, dead letters. No Kafka."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest

from auditrelay.agents.routing import (
    MAX_BATCH_BYTES,
    BatchBuffer,
    EventFacts,
    OutRecord,
    batch_deadline,
    check_record,
    malformed_record,
    plan_round,
)
from auditrelay.schemas.batches import (
    REASON_MALFORMED,
    BatchMeta,
    MalformedInput,
)
from auditrelay.schemas.builder import EncodedEvent, EventBuilder
from auditrelay.schemas.envelope import MAX_EVENT_BYTES, Actor
from auditrelay.schemas.topics import TopicNames
from auditrelay.tables.registry import DestinationRegistry
from tests.unit.tables.test_registry import config, raw

TOPICS = TopicNames("audit.")
USER = Actor(id="usr_1", type="user")
BUILDER = EventBuilder()


@dataclass(frozen=True)
class Rec:
    """A consumed record, as Faust's Message exposes it."""

    key: bytes | None
    value: bytes | None
    headers: Any
    topic: str = "audit.events"
    partition: int = 0
    offset: int = 0
    timestamp: int | None = 1_764_000_000_500


def event(workspace: str = "ws_a", category: str = "auth", action: str = "login_succeeded",
          **kwargs: Any) -> EncodedEvent:
    return BUILDER.build(workspace, category, action, actor=USER, **kwargs)


def rec(built: EncodedEvent, offset: int = 0, **changes: Any) -> Rec:
    headers = [(k, v.encode() if isinstance(v, str) else v) for k, v in built.headers]
    return replace(Rec(built.key, built.value, headers, offset=offset), **changes)


def headers_of(built: EncodedEvent, **changes: bytes | None) -> list[tuple[str, bytes | None]]:
    out = {k: (v.encode() if isinstance(v, str) else v) for k, v in built.headers}
    out.update(changes)
    return [(k, v) for k, v in out.items() if v is not None]


def registry_with(*configs: Any) -> DestinationRegistry:
    registry = DestinationRegistry()
    for cfg in configs:
        registry.apply(cfg.id, raw(cfg))
    return registry


# -- check_record ---------------------------------------------------------------------


def test_a_valid_event_gives_its_facts_from_headers() -> None:
    built = event()
    facts = check_record(built.key, built.value, rec(built).headers)
    assert facts == EventFacts("ws_a", "pro.atmos.auth.login_succeeded", built.id)


def test_headers_may_be_a_mapping_or_str_values() -> None:
    built = event()
    as_dict = dict(built.headers)  # ce_* values are str here
    assert isinstance(check_record(built.key, built.value, as_dict), EventFacts)


def test_a_valid_but_non_compact_event_is_accepted_after_parsing() -> None:
    built = event()
    pretty = json.dumps(json.loads(built.value), indent=2).encode()
    facts = check_record(built.key, pretty, rec(built).headers)
    assert facts == EventFacts("ws_a", "pro.atmos.auth.login_succeeded", built.id)


@pytest.mark.parametrize(("change", "reason"), [
    ({"ce_id": None}, "header ce_id is missing"),
    ({"ce_id": b"evt_123"}, "header ce_id 'evt_123' is not aud_ + a ULID"),
    ({"ce_id": b"aud_01jd7q0z8n6y0f3x5kq2m1v9rt"}, "is not aud_ + a ULID"),  # lower case
    ({"ce_type": None}, "header ce_type is missing"),
    ({"ce_type": b"Pro.Atmos.X"}, "is not a dotted lower snake-case event type"),
    ({"ce_type": b"pro..atmos"}, "is not a dotted lower snake-case event type"),
    ({"ce_type": b""}, "is not a dotted lower snake-case event type"),
    ({"ce_workspaceid": None}, "header ce_workspaceid is missing"),
    ({"ce_workspaceid": b"ws_b"}, "differs from header ce_workspaceid 'ws_b'"),
])
def test_header_problems_are_named(change: dict[str, bytes | None], reason: str) -> None:
    built = event()
    result = check_record(built.key, built.value, headers_of(built, **change))
    assert isinstance(result, str)
    assert reason in result


def test_a_missing_key_or_bad_workspace_id_is_named() -> None:
    built = event()
    result = check_record(None, built.value, rec(built).headers)
    assert result == "the record has no key (it must be the workspace id)"
    result = check_record(b"WS_A", built.value, headers_of(built, ce_workspaceid=b"WS_A"))
    assert isinstance(result, str)
    assert "is not ws_ + 1-40 lower-case letters or digits" in result


def test_no_headers_at_all() -> None:
    built = event()
    assert check_record(built.key, built.value, None) == "header ce_workspaceid is missing"


def test_a_record_without_value() -> None:
    built = event()
    assert check_record(built.key, None, rec(built).headers) == "the record has no value"


def _spaced(value: bytes) -> bytes:
    """Non-canonical JSON: the cheap checks cannot vouch for it, so it is parsed."""
    return value.replace(b'"id":"', b'"id": "')


@pytest.mark.parametrize(("mangle", "reason"), [
    (lambda v: b"not json", "invalid event"),
    (lambda v: b"[" + v + b"]", "invalid event"),
    (lambda v: _spaced(v)[:-1], "invalid event"),
    (lambda v: _spaced(v).replace(b'"specversion":"1.0"', b'"specversion":"0.3"'),
     "specversion"),
    (lambda v: _spaced(v).replace(b'"type":"user"', b'"type":"robot"'), "data.actor.type"),
])
def test_body_problems_are_named_by_parse_event(mangle: Any, reason: str) -> None:
    built = event()
    result = check_record(built.key, mangle(built.value), rec(built).headers)
    assert isinstance(result, str)
    assert reason in result


def test_canonical_looking_bytes_are_trusted_without_parsing() -> None:
    # The documented trade-off of the fast path: an object that carries the headers'
    # id, type and workspace in canonical form is not validated further (producers
    # validate; the router moves bytes). Its bytes still pass through untouched.
    built = event()
    odd = built.value.replace(b'"specversion":"1.0"', b'"specversion":"0.3"')
    assert isinstance(check_record(built.key, odd, rec(built).headers), EventFacts)


def test_a_body_disagreeing_with_its_headers_is_refused() -> None:
    built, other = event(), event()
    # Valid event, but the headers are another event's id.
    result = check_record(built.key, other.value, rec(built).headers)
    assert result == f"header ce_id {built.id!r} does not match the event's id {other.id!r}"
    # The type header lies (a filter would route it wrongly).
    billing = event(category="billing", action="payment_failed")
    result = check_record(billing.key, billing.value,
                          headers_of(billing, ce_type=b"pro.atmos.auth.login_succeeded"))
    assert result == ("header ce_type 'pro.atmos.auth.login_succeeded' does not match the "
                      "event's type 'pro.atmos.billing.payment_failed'")
    # Another workspace's event under this workspace's key and header.
    foreign = event("ws_b")
    result = check_record(b"ws_a", foreign.value, headers_of(foreign, ce_workspaceid=b"ws_a"))
    assert result == "header ce_workspaceid 'ws_a' does not match the event's workspaceid 'ws_b'"


def test_an_oversized_event_is_refused_with_its_size() -> None:
    built = event(metadata={"blob": "x" * 1000})
    big = built.value.replace(b"x" * 1000, b"x" * (MAX_EVENT_BYTES + 10))
    result = check_record(built.key, big, rec(built).headers)
    assert isinstance(result, str)
    assert f"more than {MAX_EVENT_BYTES}" in result


# -- plan_round -----------------------------------------------------------------------


def batches_for(plan_records: list[OutRecord], dest_id: str) -> list[OutRecord]:
    return [r for r in plan_records if r.topic == TOPICS.deliveries and r.key == dest_id.encode()]


def events_in(batch: OutRecord) -> list[dict[str, Any]]:
    assert batch.value is not None
    parsed: list[dict[str, Any]] = json.loads(batch.value)
    return parsed


def test_events_go_to_every_matching_destination_as_untouched_bytes() -> None:
    registry = registry_with(
        config("dst_all", "ws_a"),
        config("dst_billing", "ws_a", event_types=("pro.atmos.billing.*",)),
        config("dst_off", "ws_a", enabled=False),
        config("dst_free", "ws_a", forwarding=False),
        config("dst_other", "ws_b"),
    )
    built = [event(), event(category="billing", action="payment_failed"), event(),
             event("ws_c")]
    plan = plan_round([rec(b, i) for i, b in enumerate(built)], registry.matching, TOPICS,
                      now_ms=5)
    assert {(r.topic, r.key) for r in plan.records} == {
        ("audit.deliveries", b"dst_all"), ("audit.deliveries", b"dst_billing")}
    (all_batch,) = batches_for(plan.records, "dst_all")
    (billing_batch,) = batches_for(plan.records, "dst_billing")
    assert all_batch.value == b"[" + b",".join(b.value for b in built[:3]) + b"]"
    assert billing_batch.value == b"[" + built[1].value + b"]"
    assert plan.events == 4
    assert plan.routed == 4
    assert plan.unrouted == 1  # ws_c has no destination
    assert plan.malformed == 0
    assert plan.dead_letters == []


def test_batch_headers_are_batch_meta() -> None:
    registry = registry_with(config("dst_a", "ws_a"))
    built = [event(), event()]
    records = [rec(built[0], 0, timestamp=100_250), rec(built[1], 1, timestamp=99_000)]
    plan = plan_round(records, registry.matching, TOPICS)
    (batch,) = plan.records
    assert batch.key == b"dst_a"
    meta = BatchMeta.from_headers(batch.headers)
    assert meta == batch.meta
    assert meta.batch_id.startswith("msg_")
    assert len(meta.batch_id) == 30
    assert meta.destination_id == "dst_a"
    assert meta.workspace_id == "ws_a"
    assert meta.events == 2
    assert meta.first_event_ms == 100_250  # the record timestamp of the first event
    assert meta.attempt == 0
    assert meta.reason == ""


def test_a_record_without_timestamp_uses_now() -> None:
    registry = registry_with(config("dst_a", "ws_a"))
    plan = plan_round([rec(event(), timestamp=None)], registry.matching, TOPICS, now_ms=42)
    meta = plan.records[0].meta
    assert meta is not None
    assert meta.first_event_ms == 42


@pytest.mark.parametrize("count", [1, 99, 100, 101, 250, 300])
def test_chunks_of_at_most_100_in_order(count: int) -> None:
    registry = registry_with(config("dst_a", "ws_a"), config("dst_b", "ws_a"))
    built = [event() for _ in range(count)]
    plan = plan_round([rec(b, i) for i, b in enumerate(built)], registry.matching, TOPICS)
    for dest in ("dst_a", "dst_b"):
        batches = batches_for(plan.records, dest)
        assert len(batches) == -(-count // 100)
        assert all(len(events_in(b)) <= 100 for b in batches)
        assert [e["id"] for b in batches for e in events_in(b)] == [b.id for b in built]
        body = b"".join(b.value or b"" for b in batches)
        assert body == b"".join(b"[" + b",".join(x.value for x in built[i:i + 100]) + b"]"
                                for i in range(0, count, 100))
        metas = [b.meta for b in batches]
        assert [m.events for m in metas if m] == [len(events_in(b)) for b in batches]
        assert len({m.batch_id for m in metas if m}) == len(batches)  # fresh id per batch


def test_max_events_is_a_setting() -> None:
    registry = registry_with(config("dst_a", "ws_a"))
    plan = plan_round([rec(event(), i) for i in range(7)], registry.matching, TOPICS,
                      max_events=3)
    assert [len(events_in(b)) for b in plan.records] == [3, 3, 1]


def test_batches_are_cut_by_size_too() -> None:
    registry = registry_with(config("dst_a", "ws_a"))
    big = [event(metadata={"blob": "x" * 60_000}) for _ in range(40)]
    plan = plan_round([rec(b, i) for i, b in enumerate(big)], registry.matching, TOPICS)
    assert len(plan.records) > 1
    assert all(len(r.value or b"") <= MAX_BATCH_BYTES for r in plan.records)
    assert [e["id"] for r in plan.records for e in events_in(r)] == [b.id for b in big]


def test_workspaces_interleaved_keep_their_own_order_and_never_mix() -> None:
    registry = registry_with(config("dst_a", "ws_a"), config("dst_b", "ws_b"))
    built = [event("ws_a" if i % 3 else "ws_b") for i in range(30)]
    plan = plan_round([rec(b, i) for i, b in enumerate(built)], registry.matching, TOPICS)
    for dest, ws in (("dst_a", "ws_a"), ("dst_b", "ws_b")):
        (batch,) = batches_for(plan.records, dest)
        assert {e["workspaceid"] for e in events_in(batch)} == {ws}
        assert [e["id"] for e in events_in(batch)] == [b.id for b in built if b.workspace_id == ws]


def test_malformed_records_go_to_the_dlq_with_their_reason_and_origin() -> None:
    registry = registry_with(config("dst_a", "ws_a"))
    good = event()
    bad_headers = [("ce_id", b"nope"), ("ce_type", b"pro.atmos.x.y"),
                   ("ce_workspaceid", b"ws_a"), ("ar_reason", b"spoofed"), ("trace", b"t1")]
    records = [rec(good, 0), Rec(b"ws_a", b"garbage", bad_headers, partition=3, offset=17),
               Rec(None, None, None, partition=1, offset=4)]
    plan = plan_round(records, registry.matching, TOPICS)
    assert plan.malformed == 2
    assert len(plan.batches) == 1
    first, second = plan.dead_letters
    assert first.topic == "audit.dlq"
    assert first.key == b"ws_a"
    assert first.value == b"garbage"
    assert first.meta is None
    meta = MalformedInput.from_headers(first.headers)
    assert meta == MalformedInput("header ce_id 'nope' is not aud_ + a ULID", "audit.events",
                                  3, 17, REASON_MALFORMED)
    names = [k for k, _ in first.headers]
    assert ("trace", b"t1") in first.headers  # the original headers are kept ...
    assert names.count("ar_reason") == 1  # ... but never its ar_* ones
    assert dict(first.headers)["ar_reason"] == b"malformed_event"
    assert second.key is None
    assert second.value is None
    assert MalformedInput.from_headers(second.headers).source_offset == 4


def test_a_long_reason_is_cut() -> None:
    registry = registry_with()
    plan = plan_round([Rec(b"ws_a", b"x", [("ce_id", b"y" * 5000), ("ce_type", b"a.b"),
                                           ("ce_workspaceid", b"ws_a")])],
                      registry.matching, TOPICS)
    (dead,) = plan.records
    assert len(MalformedInput.from_headers(dead.headers).detail) <= 500


def test_malformed_record_helper() -> None:
    record = Rec(b"ws_a", b"v", None, partition=2, offset=9)
    dead = malformed_record(record, "why", TOPICS)
    assert dead.headers == MalformedInput("why", "audit.events", 2, 9).headers()
    assert (dead.topic, dead.key, dead.value) == ("audit.dlq", b"ws_a", b"v")


def test_an_empty_round_plans_nothing() -> None:
    plan = plan_round([], registry_with().matching, TOPICS)
    assert plan.records == []
    assert plan.events == 0


def test_topic_prefix_is_respected() -> None:
    topics = TopicNames("test.x.")
    registry = registry_with(config("dst_a", "ws_a"))
    plan = plan_round([rec(event()), Rec(None, b"", None)], registry.matching, topics)
    assert [r.topic for r in plan.records] == ["test.x.deliveries", "test.x.dlq"]


# -- BatchBuffer: open batches across reads ----------------------------------------------

#: ``Rec``'s Kafka timestamp in epoch seconds, and a moment just after it.
STAMP = 1_764_000_000.5
NOW = STAMP + 0.1


def buffer_for(registry: DestinationRegistry, **options: Any) -> BatchBuffer:
    return BatchBuffer(registry.matching, TOPICS, **options)


def ids_of(records: list[OutRecord]) -> list[str]:
    return [e["id"] for r in records for e in events_in(r)]


def test_a_batch_is_closed_the_moment_it_is_full() -> None:
    buffer = buffer_for(registry_with(config("dst_a", "ws_a")), max_events=3)
    built = [event() for _ in range(4)]
    buffer.add([rec(b, i) for i, b in enumerate(built[:3])], NOW)
    (batch,) = buffer.take()  # the third event filled it: no need to wait for a fourth
    assert ids_of([batch]) == [b.id for b in built[:3]]
    assert len(buffer) == 0
    assert buffer.held() == {}
    buffer.add([rec(built[3], 3)], NOW)
    assert buffer.take() == []
    assert len(buffer) == 1


def test_a_batch_about_to_pass_the_byte_cap_is_closed() -> None:
    buffer = buffer_for(registry_with(config("dst_a", "ws_a")), max_bytes=3000)
    built = [event(metadata={"blob": "x" * 900}) for _ in range(3)]
    buffer.add([rec(b, i) for i, b in enumerate(built)], NOW)
    closed = buffer.take()
    assert [len(events_in(r)) for r in closed] == [2]
    assert buffer.held() == {("audit.events", 0): 2}


def test_open_batches_last_across_adds_and_keep_order() -> None:
    buffer = buffer_for(registry_with(config("dst_a", "ws_a"), config("dst_b", "ws_a")),
                        max_events=10)
    built = [event() for _ in range(25)]
    out: list[OutRecord] = []
    for first in range(0, 25, 4):
        buffer.add([rec(b, first + i) for i, b in enumerate(built[first:first + 4])], NOW)
        out += buffer.take()
    for dest in ("dst_a", "dst_b"):
        assert ids_of(batches_for(out, dest)) == [b.id for b in built[:20]]
    assert buffer.held() == {("audit.events", 0): 20}
    buffer.close_all()
    out += buffer.take()
    for dest in ("dst_a", "dst_b"):
        assert ids_of(batches_for(out, dest)) == [b.id for b in built]
    assert buffer.plan.events == 25
    assert buffer.plan.routed == 50


def test_held_is_the_lowest_open_offset_per_partition() -> None:
    registry = registry_with(config("dst_a", "ws_a"), config("dst_b", "ws_b"),
                             config("dst_c", "ws_a", event_types=("pro.atmos.billing.*",)))
    buffer = buffer_for(registry, max_events=2)
    records = [
        rec(event("ws_a"), 10, partition=1),
        rec(event("ws_a", category="billing", action="payment_failed"), 11,
            partition=1),  # dst_a (10, 11) full; dst_c opens
        rec(event("ws_a"), 12, partition=1),
        rec(event("ws_b"), 40, partition=2),  # dst_b opens
        rec(event("ws_a"), 13, partition=1),  # dst_a (12, 13) full
        rec(event("ws_c"), 50, partition=3),  # nobody's: held by nothing
    ]
    buffer.add(records, NOW)
    assert buffer.held() == {("audit.events", 1): 11, ("audit.events", 2): 40}
    assert len(buffer.take()) == 2
    buffer.add([rec(event("ws_a", category="billing", action="payment_failed"), 14,
                    partition=1)], NOW)  # dst_c (11, 14) full; dst_a opens at 14
    assert len(buffer.take()) == 1
    assert buffer.held() == {("audit.events", 1): 14, ("audit.events", 2): 40}


@pytest.mark.parametrize("seed", range(5))
def test_held_is_what_the_open_batches_hold_whatever_the_traffic(seed: int) -> None:
    import random

    chance = random.Random(seed)
    workspaces = [f"ws_{n}" for n in range(6)]
    registry = registry_with(*(config(f"dst_{n}{m}", ws) for n, ws in enumerate(workspaces)
                               for m in range(2)))
    buffer = buffer_for(registry, max_events=chance.randint(2, 5), window=1.0)
    offsets = dict.fromkeys(range(3), 0)
    now = NOW
    for _ in range(30):
        records = []
        for _ in range(chance.randint(0, 8)):
            partition = chance.randrange(3)
            records.append(rec(event(chance.choice(workspaces)), offsets[partition],
                               partition=partition))
            offsets[partition] += 1
        buffer.add(records, now)
        if chance.random() < 0.2:
            buffer.close_due(now + chance.random() * 2)
        buffer.take()
        lowest: dict[tuple[str, int], int] = {}
        for batch in buffer._open.values():  # the definition, the slow way
            for part, offset in batch.firsts.items():
                lowest[part] = min(offset, lowest.get(part, offset))
        assert buffer.held() == lowest
        now += 0.1


def test_a_partial_batch_is_due_a_window_after_its_oldest_event() -> None:
    buffer = buffer_for(registry_with(config("dst_a", "ws_a"), config("dst_b", "ws_b")),
                        window=1.0)
    assert buffer.next_due() is None
    buffer.add([rec(event("ws_a"), 0)], NOW)
    buffer.add([rec(event("ws_b"), 0, partition=1, timestamp=int((STAMP + 0.3) * 1000))],
               NOW + 0.2)
    assert buffer.next_due() == STAMP + 1.0
    buffer.close_due(STAMP + 0.999)
    assert buffer.take() == []
    buffer.close_due(STAMP + 1.0)
    assert batches_for(buffer.take(), "dst_a")
    assert buffer.next_due() == pytest.approx(STAMP + 1.3)
    buffer.close_due(STAMP + 5)
    assert batches_for(buffer.take(), "dst_b")
    assert buffer.next_due() is None
    assert len(buffer) == 0


def test_a_batch_closed_full_is_no_longer_due() -> None:
    buffer = buffer_for(registry_with(config("dst_a", "ws_a")), max_events=2, window=1.0)
    buffer.add([rec(event(), 0), rec(event(), 1), rec(event(), 2, timestamp=None)], NOW)
    assert len(buffer.take()) == 1
    # The open batch's only event has no timestamp: due a window after it was added.
    assert buffer.next_due() == NOW + 1.0


def test_batch_deadline_bounds() -> None:
    now = 1000.0
    assert batch_deadline(now, 999_500, 1.0) == 1000.5  # emitted 0.5 s ago
    assert batch_deadline(now, 990_000, 1.0) == 1000.0  # already late: due now
    assert batch_deadline(now, 1_060_000, 1.0) == 1001.0  # producer clock ahead of ours


def failing_on_call(real: Callable[[str, str], Any], call: int) -> Callable[[str, str], Any]:
    """``real``, except that its ``call``-th call raises (a bug in the middle of a step)."""
    calls = 0

    def matching(workspace: str, event_type: str) -> Any:
        nonlocal calls
        calls += 1
        if calls == call:
            raise RuntimeError("boom")
        return real(workspace, event_type)

    return matching


def test_an_add_that_fails_can_resume_at_the_failing_record() -> None:
    registry = registry_with(config("dst_a", "ws_a"))
    buffer = BatchBuffer(failing_on_call(registry.matching, 3), TOPICS)
    built = [event() for _ in range(5)]
    records = [rec(b, i) for i, b in enumerate(built)]
    with pytest.raises(RuntimeError):
        buffer.add(records, NOW)
    assert buffer.failed_at == 2
    buffer.add(records, NOW, buffer.failed_at)
    buffer.close_all()
    assert ids_of(buffer.take()) == [b.id for b in built]
