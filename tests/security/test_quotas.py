"""Destinations per workspace (issue #11.4): the plan's ``max_destinations``, 25 on Enterprise.

One workspace created 1 000 destinations, and so 1 000 topics, in 4 s. One more than
the plan allows is now refused with 409 ``quota_exceeded`` naming the plan and the
limit; the count is taken with the workspace locked, so concurrent creations cannot
pass it together (on either database).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from auditrelay.schemas.settings import DEFAULT_PLANS, Plan
from tests.integration.api.conftest import ApiServer, MakeApi, error_of


def _plans(max_destinations: int) -> dict[str, Plan]:
    enterprise = DEFAULT_PLANS["enterprise"].model_copy(
        update={"max_destinations": max_destinations})
    return {**DEFAULT_PLANS, "enterprise": enterprise}


def _create(api: ApiServer, ws: str, token: str, name: str) -> httpx.Response:
    return api.call("POST", f"/v1/workspaces/{ws}/destinations", token,
                    json={"name": name, "url": "https://siem.example.com/in"})


def _count(api: ApiServer, ws: str, token: str) -> int:
    items: list[Any] = api.call("GET", f"/v1/workspaces/{ws}/destinations",
                                token).json()["items"]
    return len(items)


def test_enterprise_workspaces_get_25_destinations() -> None:
    assert DEFAULT_PLANS["enterprise"].max_destinations == 25


def test_the_26th_destination_is_refused_and_a_deletion_frees_a_slot(
        shared_api: ApiServer) -> None:
    api = shared_api
    ws, token = api.create_workspace()
    created = [api.create_destination(ws, token, name=f"d{n}")["id"] for n in range(25)]
    outbox = api.outbox_count()

    response = _create(api, ws, token, "one too many")
    assert response.status_code == 409, response.text
    error = error_of(response)
    assert error["code"] == "quota_exceeded"
    assert "the enterprise plan allows at most 25 destinations" in error["message"]
    assert api.outbox_count() == outbox  # no topic, no config record, no audit event
    assert _count(api, ws, token) == 25

    # Another workspace has its own 25.
    other_ws, other_token = api.create_workspace(name="Other")
    assert api.create_destination(other_ws, other_token)["id"]

    deleted = api.call("DELETE", f"/v1/workspaces/{ws}/destinations/{created[0]}", token)
    assert deleted.status_code == 204
    assert _create(api, ws, token, "fits again").status_code == 201
    assert _create(api, ws, token, "full again").status_code == 409


def test_the_admin_is_held_to_the_plan_too(shared_api: ApiServer) -> None:
    api = shared_api
    ws, token = api.create_workspace()
    for n in range(25):
        api.create_destination(ws, token, name=f"d{n}")
    response = _create(api, ws, api.admin_token or "", "by the admin")
    assert response.status_code == 409
    assert error_of(response)["code"] == "quota_exceeded"


def test_the_limit_is_the_plans_entitlement(make_api: MakeApi) -> None:
    api = make_api(settings={"plans": _plans(2)})
    ws, token = api.create_workspace()
    api.create_destination(ws, token, name="a")
    api.create_destination(ws, token, name="b")
    response = _create(api, ws, token, "c")
    assert response.status_code == 409
    assert "at most 2 destinations" in error_of(response)["message"]


def test_concurrent_creations_cannot_pass_the_limit_together(make_api: MakeApi) -> None:
    api = make_api(settings={"plans": _plans(3)})
    ws, token = api.create_workspace()
    api.create_destination(ws, token, name="first")

    def create(n: int) -> int:
        # A client each: the requests really are in flight at the same time.
        with httpx.Client(base_url=api.base_url, timeout=60.0) as client:
            return client.post(f"/v1/workspaces/{ws}/destinations",
                               headers={"Authorization": f"Bearer {token}"},
                               json={"name": f"racer {n}",
                                     "url": "https://siem.example.com/in"}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(pool.map(create, range(8)))
    assert statuses == [201, 201] + [409] * 6
    assert _count(api, ws, token) == 3
