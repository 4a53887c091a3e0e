"""``kind``, ``options`` and ``credentials`` of destinations through the API (contract 5.1).

What every kind shares; each kind's own fields are tested beside its module's tests.
"""

from __future__ import annotations

from typing import Any

from tests.integration.api.conftest import ApiServer, error_of


def _create(api: ApiServer, ws: str, token: str, **body: Any) -> tuple[int, dict[str, Any]]:
    return api.post_destination(ws, token, **{
        "name": "SIEM", "url": "https://siem.example.com/ingest", **body})


def test_a_destination_is_a_webhook_unless_told_otherwise(shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    created = shared_api.create_destination(ws, token)
    assert created["kind"] == "webhook"
    assert created["options"] == {"gzip": False}
    assert created["credentials_set"] == []
    assert created["secret"].startswith("whsec_")
    read = shared_api.call("GET", f"/v1/workspaces/{ws}/destinations/{created['id']}", token)
    assert read.json()["kind"] == "webhook"


def test_webhook_options_are_kept_and_patched_whole(shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    created = shared_api.create_destination(ws, token, options={"gzip": True})
    assert created["options"] == {"gzip": True}
    path = f"/v1/workspaces/{ws}/destinations/{created['id']}"
    patched = shared_api.call("PATCH", path, token, json={"options": {}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["options"] == {"gzip": False}


def test_unknown_kinds_options_and_credentials_are_refused_naming_the_field(
        shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"kind": "carrier_pigeon"}, "kind"),
        ({"options": {"gzpi": True}}, "options.gzpi"),
        ({"options": {"gzip": "sometimes"}}, "options.gzip"),
        ({"credentials": {"token": "abc"}}, "credentials.token"),
    ]
    for body, field in cases:
        status, answer = _create(shared_api, ws, token, **body)
        assert status == 422, (body, answer)
        message = answer["error"]["message"]
        assert field in message, (body, message)
        assert "abc" not in message
    listed = shared_api.call("GET", f"/v1/workspaces/{ws}/destinations", token)
    assert listed.json()["items"] == []


def test_a_kind_that_cannot_be_patched_in_leaves_the_destination_unchanged(
        shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    created = shared_api.create_destination(ws, token)
    path = f"/v1/workspaces/{ws}/destinations/{created['id']}"
    refused = shared_api.call("PATCH", path, token, json={"kind": "nope", "name": "renamed"})
    assert refused.status_code == 422
    assert "kind" in error_of(refused)["message"]
    after = shared_api.call("GET", path, token).json()
    assert after["name"] == "SIEM"
    assert after["kind"] == "webhook"
