"""Property-based: requests generated from the app's OpenAPI document never get a 5xx.

schemathesis generates valid (positive) and invalid (negative) requests for every
operation, authenticated with the right token and aimed at a real workspace and
destination (and, for the token endpoints, a token other than the one the
requests use), so that they reach the business logic rather than stopping at 401
or 404. Operations join as the API grows: every one the document lists is
fuzzed. ``/test`` is left out: it connects to the destination's URL, and the
generated URLs are not ours to call (it has tests of its own).
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import APIOperation, Case
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode

from tests.integration.api.conftest import ApiServer, MakeApi

Operation = APIOperation[Any, Any, Any, Any]
EXAMPLES = {GenerationMode.POSITIVE: 50, GenerationMode.NEGATIVE: 30}


def _destination(api: ApiServer, ws: str, token: str) -> str:
    """A destination of ``ws`` that exists now (generated DELETEs remove them)."""
    listed = api.http.get(f"/v1/workspaces/{ws}/destinations",
                          headers={"Authorization": f"Bearer {token}"})
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    if items:
        return str(items[0]["id"])
    return str(api.create_destination(ws, token)["id"])


def _other_token(api: ApiServer, ws: str, token: str) -> str:
    """The id of a token of ``ws`` that is not ``token`` (generated DELETEs revoke them)."""
    headers = {"Authorization": f"Bearer {token}"}
    listed = api.http.get(f"/v1/workspaces/{ws}/tokens", headers=headers)
    assert listed.status_code == 200, listed.text
    for item in listed.json()["items"]:
        if item["prefix"] is not None and not token.startswith(item["prefix"]):
            return str(item["id"])
    created = api.http.post(f"/v1/workspaces/{ws}/tokens", headers=headers,
                            json={"name": "fuzzed"})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _fuzz(api: ApiServer, operation: Operation, mode: GenerationMode, *, auth: str,
          ws: str, token: str) -> None:
    @settings(max_examples=EXAMPLES[mode], deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(mode))
    def run(case: Case[Any]) -> None:
        if "ws" in (case.path_parameters or {}):
            case.path_parameters["ws"] = ws
        if "dest_id" in (case.path_parameters or {}):
            case.path_parameters["dest_id"] = _destination(api, ws, token)
        if "token_id" in (case.path_parameters or {}):
            case.path_parameters["token_id"] = _other_token(api, ws, token)
        case.headers["Authorization"] = f"Bearer {auth}"  # the generated one, replaced
        case.call_and_validate(base_url=api.base_url, checks=[not_a_server_error])

    run()


@pytest.mark.slow
def test_generated_requests_never_get_a_server_error(make_api: MakeApi) -> None:
    api = make_api()
    ws, token = api.create_workspace()
    assert api.admin_token is not None
    schema = schemathesis.openapi.from_url(f"{api.base_url}/openapi.json")
    tested = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the document is well-formed
        operation = result.ok()
        if operation.path.endswith("/test"):
            continue
        tested.append(f"{operation.method.upper()} {operation.path}")
        auth = api.admin_token if operation.path == "/v1/workspaces" else token
        _fuzz(api, operation, GenerationMode.POSITIVE, auth=auth, ws=ws, token=token)
        if len(operation.body) or len(operation.query):
            # Invalid bodies and query strings; operations with neither have nothing that
            # can be invalid once the path and the token are set (no negative case).
            _fuzz(api, operation, GenerationMode.NEGATIVE, auth=auth, ws=ws, token=token)
    destinations = "/v1/workspaces/{ws}/destinations"
    assert {"POST /v1/workspaces", f"GET {destinations}", f"POST {destinations}",
            f"GET {destinations}/{{dest_id}}", f"PATCH {destinations}/{{dest_id}}",
            f"DELETE {destinations}/{{dest_id}}",
            f"POST {destinations}/{{dest_id}}/rotate-secret",
            "GET /v1/workspaces/{ws}/events", "GET /v1/workspaces/{ws}/tokens",
            "POST /v1/workspaces/{ws}/tokens",
            "DELETE /v1/workspaces/{ws}/tokens/{token_id}"} <= set(tested), tested
