"""Pure parts of the archive: rows, the retry loop, entitlements, cursors and globs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from auditrelay.agents.archive import (
    Row,
    commit_until_done,
    insert_statement,
    quick_row,
    rows_from_records,
)
from auditrelay.agents.retention import cutoff, entitlement
from auditrelay.api.events import Cursor, EventQuery, build_select, glob_to_like
from auditrelay.producer import Actor
from auditrelay.schemas.builder import EventBuilder
from auditrelay.schemas.errors import ConfigurationError, InvalidInputError
from auditrelay.schemas.settings import DEFAULT_PLANS, Settings
from tests.unit.agents.test_routing import rec

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_rows_keep_valid_events_and_skip_malformed_ones() -> None:
    built = EventBuilder().build("ws_a", "workspace", "updated", subject="ws_a",
                                 actor=Actor(id="usr_1", type="user"),
                                 target={"type": "workspace", "id": "ws_a"}, time=NOW)
    # The same event re-encoded with spaces: valid, but only the model can vouch for it.
    spaced = built._replace(value=json.dumps(json.loads(built.value)).encode())
    records = [built, spaced, rec(built, value=b"{}"), rec(built, value=None),
               rec(built, value=b"\xff"), rec(built, key=b"ws_b"),
               rec(built, headers=[])]
    rows, skipped = rows_from_records(records)
    assert skipped == 5
    assert rows[1] == {**rows[0], "raw": spaced.value.decode()}
    assert rows[:1] == [{"id": built.id, "source": "https://app.atmos.pro/workspaces/ws_a",
                     "workspace_id": "ws_a", "type": "pro.atmos.workspace.updated",
                     "time": NOW, "actor_id": "usr_1", "actor_type": "user",
                     "target_type": "workspace", "target_id": "ws_a", "subject": "ws_a",
                     "raw": built.value.decode()}]


@pytest.mark.parametrize("change", [
    lambda doc: doc.update(time="2026-11-25T12:00:00.000+01:00"),
    lambda doc: doc.update(time="yesterday"),
    lambda doc: doc.pop("workspaceid"),
    lambda doc: doc["data"].update(actor={"id": 7, "type": "user"}),
    lambda doc: doc["data"].update(target={"type": "workspace"}),
])
def test_quick_row_refuses_what_it_cannot_vouch_for(change: Any) -> None:
    doc = json.loads(EventBuilder().build("ws_a", "workspace", "updated",
                                          actor=Actor(id="usr_1", type="user")).value)
    change(doc)
    with pytest.raises((ValueError, KeyError, TypeError)):
        quick_row(json.dumps(doc).encode())


def test_insert_statement_ignores_conflicts_on_both_backends_only() -> None:
    for dialect in ("sqlite", "postgresql"):
        assert "ON CONFLICT" in str(insert_statement(dialect).compile(
            dialect=__import__(f"sqlalchemy.dialects.{dialect}", fromlist=["dialect"])
            .dialect()))
    with pytest.raises(ConfigurationError):
        insert_statement("mysql")


@pytest.mark.asyncio
async def test_commit_is_retried_until_it_succeeds() -> None:
    calls: list[int] = []

    def flaky(rows: Sequence[Row]) -> None:
        calls.append(len(rows))
        if len(calls) < 3:
            raise OSError("database is locked")

    failures = await commit_until_done(flaky, [{"id": "x"}], first_backoff=0.001)
    assert failures == 2
    assert calls == [1, 1, 1]


@pytest.mark.parametrize(("plan", "own", "days", "extended"), [
    ("free", None, 7, False), ("team", 400, 30, False), ("enterprise", None, 365, False),
    ("enterprise", 730, 730, True), (None, None, 7, False), ("gone", None, 7, False),
])
def test_entitlement(plan: str | None, own: int | None, days: int, extended: bool) -> None:
    got = entitlement("ws_x", plan, own, DEFAULT_PLANS, "free")
    assert (got.days, got.extended) == (days, extended)


def test_cutoff_is_now_minus_days() -> None:
    assert cutoff(NOW, 30) == NOW - timedelta(days=30)


def test_settings_refuse_an_unknown_default_plan_and_a_bad_cron() -> None:
    with pytest.raises(ValueError, match="retention_default_plan"):
        Settings(retention_default_plan="platinum")
    with pytest.raises(ValueError, match="cron"):
        Settings(retention_cron="every day")


def test_cursor_round_trip_and_garbage() -> None:
    cursor = Cursor(NOW.replace(microsecond=123456), "aud_x")
    assert Cursor.decode(cursor.encode()) == cursor
    for bad in ("", "!!!", "WzEsMl0", "eyJhIjoxfQ"):
        with pytest.raises(InvalidInputError):
            Cursor.decode(bad)


def test_glob_to_like_escapes_sql_wildcards() -> None:
    assert glob_to_like("pro.atmos.billing.*") == "pro.atmos.billing.%"
    assert glob_to_like("pro.atmos.team_member.*") == "pro.atmos.team\\_member.%"
    assert glob_to_like("a%b") == "a\\%b"


def test_build_select_refuses_bad_filters() -> None:
    for query in (EventQuery(type="Bad Type"), EventQuery(actor=""), EventQuery(limit=501),
                  EventQuery(since=datetime(2026, 1, 1))):
        with pytest.raises(InvalidInputError):
            build_select("ws_a", query)


@pytest.mark.parametrize("options", [
    {},
    {"subject": "ws_a", "target": {"type": "workspace", "id": "ws_a"}},
    {"target": {"type": "team", "id": "équipe/7"}, "description": "d", "metadata": {"k": 1}},
    {"subject": 'a "quoted" \\ subject'},  # escapes: the JSON path
    {"actor": Actor(id="svc_é", type="service_account")},
])
def test_quick_row_reads_the_canonical_head_like_the_json_path(options: dict[str, Any]) -> None:
    from auditrelay.agents.archive import _CANONICAL_HEAD, _json_row

    options.setdefault("actor", Actor(id="usr_1", type="user"))
    built = EventBuilder().build("ws_a", "workspace", "updated", **options)
    assert quick_row(built.value) == _json_row(built.value)
    assert (_CANONICAL_HEAD.match(built.value.decode()) is None) == ("\\" in built.value.decode())


@pytest.mark.parametrize("when", [
    NOW, NOW.replace(microsecond=253000), datetime(2026, 3, 29, 2, 30, 0, 1, tzinfo=UTC),
    datetime(2026, 11, 25, 13, 0, 0, 500, tzinfo=timezone(timedelta(hours=1))),
])
def test_sqlite_times_are_stored_as_sqlalchemy_stores_them(when: datetime) -> None:
    from sqlalchemy.dialects.sqlite import DATETIME
    from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect

    from auditrelay.agents.archive import _with_sqlite_times

    bind = DATETIME().bind_processor(sqlite_dialect())
    assert bind is not None
    expected = bind(when.astimezone(UTC).replace(tzinfo=None))
    rows = _with_sqlite_times([{"id": "a", "time": when}, {"id": "b", "time": when}])
    assert rows == [{"id": "a", "time": expected}, {"id": "b", "time": expected}]
