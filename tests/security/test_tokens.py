"""Workspace tokens are listed, created and revoked; rotation needs no downtime (issue #11).

A workspace had one token for ever: leaked, it could only be replaced by the admin,
and every client broke at once. Now ``/v1/workspaces/{ws}/tokens`` lists a
workspace's tokens (name, prefix, created, last used: never a token nor its hash),
creates more (the token shown once) and revokes them, effective at the very next
request. Another workspace sees none of it; a workspace holds at most 20 tokens and
cannot revoke its own last one (the admin can, and can then create a new one).
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from auditrelay.api.service import MAX_TOKENS_PER_WORKSPACE
from auditrelay.api.tokens import hash_token
from auditrelay.store.db import OutboxEntry, WorkspaceToken, utcnow
from tests.integration.api.conftest import ApiServer, error_of

LISTED = {"id", "name", "prefix", "created_at", "last_used_at"}
CREATED = {"id", "name", "prefix", "created_at", "token"}


def _tokens_path(ws: str) -> str:
    return f"/v1/workspaces/{ws}/tokens"


def _list(api: ApiServer, ws: str, who: str | None) -> list[dict[str, Any]]:
    response = api.call("GET", _tokens_path(ws), who)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def _create(api: ApiServer, ws: str, who: str | None, name: str = "ci") -> dict[str, Any]:
    response = api.call("POST", _tokens_path(ws), who, json={"name": name})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _works(api: ApiServer, ws: str, token: str) -> int:
    return api.call("GET", f"/v1/workspaces/{ws}/destinations", token).status_code


def _audit_events(api: ApiServer, ws: str) -> list[dict[str, Any]]:
    """The self-audit events of ``ws`` waiting in the (unpublished) outbox."""
    with api.store.transaction() as session:
        values = [e.value for e in session.scalars(select(OutboxEntry).order_by(OutboxEntry.id))
                  if e.value is not None]
    events = [json.loads(v) for v in values if v.startswith(b"{")]
    return [e for e in events if e.get("workspaceid") == ws]


def test_tokens_are_listed_without_the_token_or_its_hash(shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    [initial] = _list(shared_api, ws, token)
    assert set(initial) == LISTED
    assert initial["name"] == "initial"
    assert initial["id"].startswith("tok_")
    assert initial["prefix"] == token[:12]
    assert initial["prefix"].startswith("art_")

    created = _create(shared_api, ws, token, "deploy bot")
    assert set(created) == CREATED
    assert created["token"].startswith("art_")
    assert created["prefix"] == created["token"][:12]
    assert created["name"] == "deploy bot"

    listing = shared_api.call("GET", _tokens_path(ws), token)
    assert [t["id"] for t in listing.json()["items"]] == [initial["id"], created["id"]]
    for secret in (token, created["token"]):
        assert secret not in listing.text
        assert hash_token(secret) not in listing.text
    assert "token_hash" not in listing.text


def test_rotation_without_downtime(shared_api: ApiServer) -> None:
    ws, old = shared_api.create_workspace()
    [old_row] = _list(shared_api, ws, old)
    new = _create(shared_api, ws, old, "rotated")
    assert _works(shared_api, ws, old) == 200
    assert _works(shared_api, ws, new["token"]) == 200

    revoked = shared_api.call("DELETE", f"{_tokens_path(ws)}/{old_row['id']}", new["token"])
    assert revoked.status_code == 204, revoked.text
    # The very next request: no cache keeps the revoked token alive.
    refused = shared_api.call("GET", f"/v1/workspaces/{ws}/destinations", old)
    assert refused.status_code == 401
    assert error_of(refused)["code"] == "unauthorized"
    assert _works(shared_api, ws, new["token"]) == 200
    assert [t["id"] for t in _list(shared_api, ws, new["token"])] == [new["id"]]


def test_a_token_can_revoke_itself_when_another_remains(shared_api: ApiServer) -> None:
    ws, old = shared_api.create_workspace()
    [old_row] = _list(shared_api, ws, old)
    new = _create(shared_api, ws, old)
    assert shared_api.call("DELETE", f"{_tokens_path(ws)}/{old_row['id']}",
                           old).status_code == 204
    assert _works(shared_api, ws, old) == 401
    assert _works(shared_api, ws, new["token"]) == 200


def test_another_workspace_can_neither_list_create_nor_revoke(shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    other_ws, other_token = shared_api.create_workspace(name="Other")
    [mine] = _list(shared_api, ws, token)
    for method, path, body in (
            ("GET", _tokens_path(ws), None),
            ("POST", _tokens_path(ws), {"name": "intruder"}),
            ("DELETE", f"{_tokens_path(ws)}/{mine['id']}", None)):
        response = shared_api.call(method, path, other_token, json=body)
        assert response.status_code == 404, (method, response.text)
        assert error_of(response)["code"] == "not_found"
    # Our token's id under their own workspace: not theirs to revoke either.
    response = shared_api.call("DELETE", f"{_tokens_path(other_ws)}/{mine['id']}", other_token)
    assert response.status_code == 404
    assert _works(shared_api, ws, token) == 200
    assert len(_list(shared_api, ws, token)) == 1


@pytest.mark.parametrize("token_id", ["tok_", "tok_A", "dst_abc", "tok_" + "a" * 41,
                                      "tok_a%0d%0a", "tok_unknown"])
def test_malformed_or_unknown_token_ids_are_404(shared_api: ApiServer, token_id: str) -> None:
    ws, token = shared_api.create_workspace()
    response = shared_api.call("DELETE", f"{_tokens_path(ws)}/{token_id}", token)
    assert response.status_code == 404, response.text
    assert error_of(response)["code"] == "not_found"
    assert _works(shared_api, ws, token) == 200


def test_a_workspace_cannot_revoke_its_last_token_but_the_admin_can(
        shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    [row] = _list(shared_api, ws, token)
    path = f"{_tokens_path(ws)}/{row['id']}"
    refused = shared_api.call("DELETE", path, token)
    assert refused.status_code == 409
    assert error_of(refused)["code"] == "conflict"
    assert "last token" in error_of(refused)["message"]
    assert _works(shared_api, ws, token) == 200

    # The admin may (a leaked last token), and then issues the workspace a new one.
    assert shared_api.call("DELETE", path, shared_api.admin_token).status_code == 204
    assert _works(shared_api, ws, token) == 401
    assert _list(shared_api, ws, shared_api.admin_token) == []
    fresh = _create(shared_api, ws, shared_api.admin_token, "after incident")
    assert _works(shared_api, ws, fresh["token"]) == 200


def test_concurrent_revocations_never_leave_a_workspace_without_tokens(
        shared_api: ApiServer) -> None:
    ws, first = shared_api.create_workspace()
    second = _create(shared_api, ws, first)
    ids = [t["id"] for t in _list(shared_api, ws, first)]
    barrier = threading.Barrier(2)

    def revoke(token: str, token_id: str) -> int:
        with httpx.Client(base_url=shared_api.base_url, timeout=60.0) as client:
            barrier.wait(timeout=30)
            return client.delete(f"{_tokens_path(ws)}/{token_id}",
                                 headers={"Authorization": f"Bearer {token}"}).status_code

    with ThreadPoolExecutor(max_workers=2) as pool:
        # Each token revokes itself at the same moment: only one may win.
        done = [pool.submit(revoke, first, ids[0]), pool.submit(revoke, second["token"], ids[1])]
        statuses = sorted(f.result(timeout=90) for f in done)
    assert statuses == [204, 409]
    assert len(_list(shared_api, ws, shared_api.admin_token)) == 1


def test_a_workspace_holds_at_most_twenty_tokens(shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    extra = [_create(shared_api, ws, token, f"t{i}")
             for i in range(MAX_TOKENS_PER_WORKSPACE - 1)]
    refused = shared_api.call("POST", _tokens_path(ws), token, json={"name": "one too many"})
    assert refused.status_code == 409
    assert error_of(refused)["code"] == "quota_exceeded"
    assert str(MAX_TOKENS_PER_WORKSPACE) in error_of(refused)["message"]
    refused = shared_api.call("POST", _tokens_path(ws), shared_api.admin_token,
                              json={"name": "the admin too"})
    assert error_of(refused)["code"] == "quota_exceeded"
    assert len(_list(shared_api, ws, token)) == MAX_TOKENS_PER_WORKSPACE

    assert shared_api.call("DELETE", f"{_tokens_path(ws)}/{extra[0]['id']}",
                           token).status_code == 204
    _create(shared_api, ws, token, "room again")


def test_last_used_moves_at_most_once_a_minute(shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    unused = _create(shared_api, ws, token, "unused")
    [first, second] = _list(shared_api, ws, token)
    assert first["last_used_at"] is not None  # this very listing used it
    assert second["last_used_at"] is None
    assert second["id"] == unused["id"]

    # Within the minute: no write per request.
    _works(shared_api, ws, token)
    [again, _] = _list(shared_api, ws, token)
    assert again["last_used_at"] == first["last_used_at"]

    # Older than a minute: the next use moves it to now.
    earlier = utcnow() - timedelta(minutes=2)
    with shared_api.store.transaction() as session:
        session.execute(update(WorkspaceToken).where(WorkspaceToken.id == first["id"])
                        .values(last_used_at=earlier))
    before = utcnow()
    _works(shared_api, ws, token)
    with shared_api.store.transaction() as session:
        moved = session.get(WorkspaceToken, first["id"])
        assert moved is not None
        assert moved.last_used_at is not None
        assert moved.last_used_at >= before - timedelta(seconds=1)
        untouched = session.get(WorkspaceToken, unused["id"])
        assert untouched is not None
        assert untouched.last_used_at is None


def test_creation_and_revocation_are_audited(shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    created = _create(shared_api, ws, token, "audited")
    assert shared_api.call("DELETE", f"{_tokens_path(ws)}/{created['id']}",
                           token).status_code == 204
    events = [e for e in _audit_events(shared_api, ws) if ".auth.api_key_" in e["type"]]
    assert [e["type"] for e in events] == ["pro.atmos.auth.api_key_created",
                                           "pro.atmos.auth.api_key_revoked"]
    for event in events:
        assert event["data"]["target"] == {"type": "api_key", "id": created["id"]}
        assert event["data"]["actor"] == {"type": "api_key", "id": f"token:{ws}"}
        assert created["token"] not in json.dumps(event)
        assert created["prefix"] not in json.dumps(event)


def test_every_plan_and_the_admin_manage_tokens(shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace(plan="free")
    created = _create(shared_api, ws, token)
    assert len(_list(shared_api, ws, token)) == 2
    assert len(_list(shared_api, ws, shared_api.admin_token)) == 2
    assert shared_api.call("DELETE", f"{_tokens_path(ws)}/{created['id']}",
                           shared_api.admin_token).status_code == 204
    assert shared_api.call("GET", f"/v1/workspaces/{ws}/events",
                           created["token"]).status_code == 401


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": "a\nb"}, {"name": "x" * 201},
                                  {"name": "ok", "token": "art_chosen"}])
def test_a_bad_token_body_is_refused(shared_api: ApiServer, body: dict[str, Any]) -> None:
    ws, token = shared_api.create_workspace()
    response = shared_api.call("POST", _tokens_path(ws), token, json=body)
    assert response.status_code == 422, response.text
    assert error_of(response)["code"] == "invalid_request"
    assert len(_list(shared_api, ws, token)) == 1
