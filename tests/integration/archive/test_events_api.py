"""``GET /v1/workspaces/{ws}/events`` over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from auditrelay.producer import Actor
from tests.integration.api.conftest import ApiServer, error_of, running_api
from tests.integration.archive.conftest import archive, make_row

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
ALICE = Actor(id="usr_alice", type="user")
BOT = Actor(id="svc_bot", type="service_account")


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[ApiServer]:
    with running_api(db_url, tmp_path / "var") as running:
        yield running


def seed(server: ApiServer, ws: str) -> list[dict[str, Any]]:
    """60 events: billing and workspace types, two actors, three targets, 1 min apart."""
    rows = []
    for i in range(60):
        category, action = (("billing", "subscription_updated") if i % 3 == 0
                            else ("workspace", "updated"))
        rows.append(make_row(ws, T0 + timedelta(minutes=i), category=category, action=action,
                             actor=ALICE if i % 2 else BOT, target=("workspace", f"t{i % 3}")))
    # Two events at the very same millisecond: the id breaks the tie.
    rows += [make_row(ws, T0 + timedelta(minutes=30)) for _ in range(2)]
    archive(server.store.engine, rows)
    return rows


def fetch_all(server: ApiServer, ws: str, token: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = server.call("GET", f"/v1/workspaces/{ws}/events", token, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


def test_filters_return_exactly_the_matching_events_newest_first(server: ApiServer) -> None:
    ws, token = server.create_workspace(plan="free")  # every plan reads its own log
    rows = seed(server, ws)

    def expect(keep: Any) -> list[str]:
        wanted = sorted((r for r in rows if keep(r)), key=lambda r: (r["time"], r["id"]),
                        reverse=True)
        return [r["id"] for r in wanted]

    assert ids(fetch_all(server, ws, token, limit=7)) == expect(lambda r: True)
    assert ids(fetch_all(server, ws, token, type="pro.atmos.billing.*")) == expect(
        lambda r: r["type"].startswith("pro.atmos.billing."))
    assert ids(fetch_all(server, ws, token, type="pro.atmos.workspace.updated")) == expect(
        lambda r: r["type"] == "pro.atmos.workspace.updated")
    assert ids(fetch_all(server, ws, token, type="*.subscription_*")) == expect(
        lambda r: r["type"].endswith(".subscription_updated"))
    assert fetch_all(server, ws, token, type="pro_atmos.*") == []  # '_' is not a wildcard
    assert ids(fetch_all(server, ws, token, actor="usr_alice")) == expect(
        lambda r: r["actor_id"] == "usr_alice")
    assert ids(fetch_all(server, ws, token, target="t1", actor="svc_bot")) == expect(
        lambda r: r["target_id"] == "t1" and r["actor_id"] == "svc_bot")
    since, until = T0 + timedelta(minutes=10), T0 + timedelta(minutes=20)
    assert ids(fetch_all(server, ws, token, since="2026-11-20T09:10:00+01:00",
                         until=until.isoformat())) == expect(lambda r: since <= r["time"] < until)
    first = fetch_all(server, ws, token, limit=500)[0]
    assert first == __import__("json").loads(
        next(r["raw"] for r in rows if r["id"] == first["id"]))


def test_pagination_returns_every_row_once_while_inserts_go_on(server: ApiServer) -> None:
    ws, token = server.create_workspace(plan="team")
    existing = {r["id"] for r in seed(server, ws)}
    seen: list[str] = []
    cursor = None
    page = 0
    while True:
        params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        response = server.call("GET", f"/v1/workspaces/{ws}/events", token, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        seen += ids(body["items"])
        # Newer events, and events in the middle of the range, arrive between pages.
        page += 1
        archive(server.store.engine, [make_row(ws, datetime.now(UTC)),
                                      make_row(ws, T0 + timedelta(minutes=page, seconds=30))])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "a row was returned twice"
    assert existing <= set(seen), "a row that existed before paging was skipped"


def test_isolation_and_bad_input(server: ApiServer) -> None:
    ws_a, token_a = server.create_workspace(plan="enterprise")
    ws_b, token_b = server.create_workspace(plan="business")
    seed(server, ws_a)
    path = f"/v1/workspaces/{ws_a}/events"
    assert server.call("GET", path, token_b).status_code == 404
    assert error_of(server.call("GET", path, token_b))["code"] == "not_found"
    assert server.call("GET", path).status_code == 401
    assert server.call("GET", f"/v1/workspaces/{ws_b}/events", token_b).json() == {
        "items": [], "next_cursor": None}
    admin = server.call("GET", path, server.admin_token, params={"limit": 1})
    assert admin.status_code == 200
    assert len(admin.json()["items"]) == 1
    for cursor in ("garbage", "WzEsMl0"):
        response = server.call("GET", path, token_a, params={"cursor": cursor})
        assert response.status_code == 400, (cursor, response.text)
        assert error_of(response)["code"] == "invalid_cursor"
    for params in ({"type": "Pro.Atmos"}, {"limit": 501}, {"limit": 0},
                   {"since": "2026-11-20T10:00:00"}, {"actor": "a\x01b"}, {"until": "yesterday"}):
        response = server.call("GET", path, token_a, params=params)
        assert response.status_code == 422, (params, response.text)
        assert error_of(response)["code"] == "invalid_request"
