"""Who may call what: bearer tokens (401), admin endpoints (403), tenants (404), plans (402).

Destinations of the other tenant point at a live loopback receiver, so a leak
through ``/test`` would show up as a request there, never as a call outside.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, update

from auditrelay.store.db import Destination, Workspace
from tests.integration.api.conftest import ADMIN_TOKEN, ApiServer, MakeApi, error_of
from tests.support.servers import Receiver

NEW_DESTINATION = {"name": "SIEM", "url": "https://siem.example.com/ingest"}


def destination_endpoints(ws: str, dest: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every destination endpoint as ``(method, path, json body)``."""
    base = f"/v1/workspaces/{ws}/destinations"
    return [
        ("GET", base, None),
        ("POST", base, NEW_DESTINATION),
        ("GET", f"{base}/{dest}", None),
        ("PATCH", f"{base}/{dest}", {"enabled": False}),
        ("DELETE", f"{base}/{dest}", None),
        ("POST", f"{base}/{dest}/test", None),
        ("POST", f"{base}/{dest}/rotate-secret", None),
    ]


def all_endpoints(ws: str, dest: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [("POST", "/v1/workspaces", {"name": "Other", "plan": "enterprise"}),
            *destination_endpoints(ws, dest)]


@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", "Bearer  x y", "Basic YWRtaW46YWRtaW4=", "Bearer art_not-a-real-token",
    f"Token {ADMIN_TOKEN}", ADMIN_TOKEN,
])
def test_missing_or_invalid_tokens_get_401(api: ApiServer, authorization: str | None) -> None:
    ws, token = api.create_workspace()
    dest = api.create_destination(ws, token)["id"]
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path, body in all_endpoints(ws, dest):
        response = api.call(method, path, json=body, headers=headers)
        assert response.status_code == 401, (method, path, response.text)
        assert error_of(response)["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"
    # Nothing happened to the destination.
    assert api.call("GET", f"/v1/workspaces/{ws}/destinations/{dest}", token).status_code == 200


def test_workspace_tokens_are_refused_on_admin_endpoints(api: ApiServer) -> None:
    _, token = api.create_workspace()
    response = api.call("POST", "/v1/workspaces", token, json={"name": "Mine", "plan": "team"})
    assert response.status_code == 403
    error = error_of(response)
    assert error["code"] == "forbidden"
    assert "admin token" in error["message"]


def test_admin_endpoints_are_off_without_an_admin_token(make_api: MakeApi) -> None:
    api = make_api(admin_token=None)
    response = api.call("POST", "/v1/workspaces", "anything",
                        json={"name": "Acme", "plan": "enterprise"})
    assert response.status_code == 401  # no admin token configured: no token is valid
    assert error_of(response)["code"] == "unauthorized"


def test_each_tenant_sees_404_for_the_other_on_every_endpoint(
        delivering_api: ApiServer, receiver: Receiver) -> None:
    api = delivering_api
    ws_a, token_a = api.create_workspace(name="A")
    ws_b, token_b = api.create_workspace(name="B")
    dest_a = api.create_destination(ws_a, token_a, url=receiver.url)
    dest_b = api.create_destination(ws_b, token_b, url=receiver.url)

    attempts = [
        # Token of one tenant on the other's workspace path.
        *[(token_a, *e) for e in destination_endpoints(ws_b, dest_b["id"])],
        *[(token_b, *e) for e in destination_endpoints(ws_a, dest_a["id"])],
        # Own workspace path, the other tenant's destination id.
        *[(token_a, *e) for e in destination_endpoints(ws_a, dest_b["id"])
          if e[1].count("/") > 4],
        *[(token_b, *e) for e in destination_endpoints(ws_b, dest_a["id"])
          if e[1].count("/") > 4],
    ]
    assert len(attempts) == 7 + 7 + 5 + 5
    for token, method, path, body in attempts:
        response = api.call(method, path, token, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert error_of(response)["code"] == "not_found"

    assert receiver.requests == []  # no test delivery went out for anybody
    for ws, token, dest in ((ws_a, token_a, dest_a), (ws_b, token_b, dest_b)):
        listed = api.call("GET", f"/v1/workspaces/{ws}/destinations", token).json()["items"]
        assert [d["id"] for d in listed] == [dest["id"]]  # nothing created, nothing deleted
        assert listed[0]["enabled"] is True
        assert listed[0]["updated_at"] == dest["updated_at"]
        row = api.destination_row(dest["id"])
        assert row is not None
        assert row.version == 1
        assert row.previous_secret_encrypted is None  # never rotated


def test_the_admin_token_is_not_confused_with_a_workspace(api: ApiServer) -> None:
    ws, token = api.create_workspace()
    # A workspace id that does not exist is 404 for the admin as for anyone.
    response = api.call("GET", "/v1/workspaces/ws_doesnotexist/destinations", api.admin_token)
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"
    # A workspace token cannot reach a workspace it does not own, existing or not.
    response = api.call("GET", "/v1/workspaces/ws_doesnotexist/destinations", token)
    assert response.status_code == 404
    assert ws != "ws_doesnotexist"


@pytest.mark.parametrize("plan", ["free", "team", "business"])
def test_plans_without_forwarding_get_402(api: ApiServer, plan: str) -> None:
    ws, token = api.create_workspace(plan=plan)
    for method, path, body in destination_endpoints(ws, "dst_whatever"):
        response = api.call(method, path, token, json=body)
        assert response.status_code == 402, (method, path, response.text)
        error = error_of(response)
        assert error["code"] == "plan_required"
        assert f"the {plan} plan does not include event forwarding" in error["message"]
        assert "enterprise" in error["message"]  # says which plan does
    # Nothing was created.
    with api.store.transaction() as session:
        assert session.query(Destination).filter_by(workspace_id=ws).count() == 0


def test_a_downgraded_workspace_gets_402_for_its_existing_destinations(
        delivering_api: ApiServer, receiver: Receiver) -> None:
    api = delivering_api
    ws, token = api.create_workspace()
    dest = api.create_destination(ws, token, url=receiver.url)
    with api.store.transaction() as session:
        session.execute(update(Workspace).where(Workspace.id == ws).values(plan="team"))
    for method, path, body in destination_endpoints(ws, dest["id"]):
        response = api.call(method, path, token, json=body)
        assert response.status_code == 402, (method, path, response.text)
        assert "team plan does not include event forwarding" in error_of(response)["message"]
    assert receiver.requests == []
    row = api.destination_row(dest["id"])
    assert row is not None
    assert (row.enabled, row.version) == (True, 1)


@pytest.mark.parametrize("via", ["destination", "token"])
def test_a_route_with_a_workspace_and_its_caller_looks_the_token_up_once(
        api: ApiServer, via: str) -> None:
    # The workspace dependency authenticates in its own hop and `Who` reuses the result:
    # a second lookup would cost a query and count a refused token twice.
    ws, token = api.create_workspace()
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(api.store.engine, "before_cursor_execute", seen)
    try:
        if via == "destination":
            api.create_destination(ws, token)
        else:
            answer = api.call("POST", f"/v1/workspaces/{ws}/tokens", token, json={"name": "ci"})
            assert answer.status_code == 201, answer.text
    finally:
        event.remove(api.store.engine, "before_cursor_execute", seen)
    lookups = [s for s in statements if "FROM workspace_tokens JOIN workspaces" in s]
    assert len(lookups) == 1, statements
    # It runs in the route's transaction, whose session then holds the workspace.
    reloaded = [s for s in statements if s.startswith("SELECT workspaces.id, workspaces.name")]
    assert reloaded == [], statements
