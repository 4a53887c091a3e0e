"""Refused request bodies: custom headers (contract section 2) and validation errors.

Every refusal is 422 ``invalid_request`` with a message naming the header or field,
never echoing a header value, and leaves nothing behind: no destination, no
outbox entry.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.api.conftest import ApiServer, error_of

RESERVED_NAMES = [
    "Authorization", "authorization", "AUTHORIZATION", "Content-Type", "content-length",
    "Content-Encoding", "HOST", "User-Agent", "Connection", "keep-alive", "Transfer-Encoding",
    "TE", "te", "Trailer", "Upgrade", "Proxy-Authorization", "proxy-connection",
    "X-Webhook-Signature", "x-webhook-id", "X-WEBHOOK-TIMESTAMP", "Webhook-Id",
    "webhook-signature", "WEBHOOK-TIMESTAMP", "ce-id", "Ce-Type", "CE-SOURCE",
]
SECRET_VALUE = "tok_very_secret_123"

# (headers, text the message must contain)
BAD_HEADERS: list[tuple[dict[str, str], str]] = [
    *[({name: SECRET_VALUE}, f"headers.{name}: header {name} is reserved")
      for name in RESERVED_NAMES],
    ({"X-Tenant": f"{SECRET_VALUE}\r\nX-Injected: 1"}, "headers.X-Tenant: header value may"),
    ({"X-Tenant": f"{SECRET_VALUE}\nX-Injected: 1"}, "headers.X-Tenant: header value may"),
    ({"X-Tenant": f"{SECRET_VALUE}\r"}, "headers.X-Tenant: header value may"),
    ({"X-Tenant": f"{SECRET_VALUE}\x00"}, "headers.X-Tenant: header value may"),
    ({"X-Tenant\r\nX-Injected": SECRET_VALUE}, "headers.X-Tenant\\r\\nX-Injected: header name"),
    ({"X-Tenant\n": SECRET_VALUE}, "headers.X-Tenant\\n: header name must be an RFC 9110"),
    ({"X Tenant": SECRET_VALUE}, "headers.X Tenant: header name must be an RFC 9110 token"),
    ({"X-Tenant:": SECRET_VALUE}, "headers.X-Tenant:: header name must be an RFC 9110 token"),
    ({"": SECRET_VALUE}, "header name must be an RFC 9110 token"),
    ({"X-Caf\u00e9": SECRET_VALUE}, "header name must be an RFC 9110 token"),
    ({"X-Tenant": f"caf\u00e9 {SECRET_VALUE}"}, "headers.X-Tenant: header value may contain"),
    ({"X-Tenant": f" {SECRET_VALUE}"}, "headers.X-Tenant: header value must not start or end"),
    ({"X-Key": SECRET_VALUE, "x-key": "2"}, "headers.x-key: header x-key is given twice"),
    ({f"X-H{i}": SECRET_VALUE for i in range(21)},
     "headers: at most 20 custom headers are allowed, got 21"),
    ({"X-Big": SECRET_VALUE + "a" * 8200}, "more than 8192"),
    ({f"X-H{i}": SECRET_VALUE + "a" * 500 for i in range(17)}, "more than 8192"),
]


def _ids(cases: list[tuple[dict[str, str], str]]) -> list[str]:
    return [ascii(list(h))[:40] + f"-{len(h)}" for h, _ in cases]


@pytest.mark.parametrize(("headers", "expected"), BAD_HEADERS, ids=_ids(BAD_HEADERS))
def test_bad_headers_are_refused_on_create(shared_api: ApiServer, headers: dict[str, str],
                                           expected: str) -> None:
    ws, token = shared_api.create_workspace()
    outbox = shared_api.outbox_count()
    response = shared_api.call("POST", f"/v1/workspaces/{ws}/destinations", token, json={
        "name": "SIEM", "url": "https://siem.example.com/", "headers": headers})
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert error["message"].startswith("headers")
    assert expected in error["message"]
    assert SECRET_VALUE not in response.text  # values may be credentials
    assert "\r" not in error["message"]
    assert "\n" not in error["message"]
    assert shared_api.call("GET", f"/v1/workspaces/{ws}/destinations", token).json() == \
        {"items": []}
    assert shared_api.outbox_count() == outbox


@pytest.mark.parametrize(("headers", "expected"), [
    ({"authorization": "Bearer x"}, "header authorization is reserved"),
    ({"X-Tenant": "a\r\nb"}, "headers.X-Tenant: header value may"),
    ({f"X-H{i}": "v" for i in range(21)}, "at most 20 custom headers"),
])
def test_bad_headers_are_refused_on_patch(shared_api: ApiServer, headers: dict[str, str],
                                          expected: str) -> None:
    ws, token = shared_api.create_workspace()
    dest = shared_api.create_destination(ws, token, headers={"X-Tenant": "acme"})
    path = f"/v1/workspaces/{ws}/destinations/{dest['id']}"
    row = shared_api.destination_row(dest["id"])
    assert row is not None
    outbox = shared_api.outbox_count()
    response = shared_api.call("PATCH", path, token, json={"headers": headers})
    assert response.status_code == 422, response.text
    assert expected in error_of(response)["message"]
    after = shared_api.destination_row(dest["id"])
    assert after is not None
    assert after.headers_encrypted == row.headers_encrypted
    assert after.version == row.version
    assert shared_api.call("GET", path, token).json()["headers"] == {"X-Tenant": "********"}
    assert shared_api.outbox_count() == outbox


def test_limits_are_inclusive(shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    twenty = {f"X-H{i}": "v" for i in range(20)}
    dest = shared_api.create_destination(ws, token, headers=twenty)
    assert dest["headers"] == dict.fromkeys(twenty, "********")
    exactly = {"X-Big": "a" * (8192 - len("X-Big"))}
    dest = shared_api.create_destination(ws, token, headers=exactly)
    assert list(dest["headers"]) == ["X-Big"]


VALID = {"name": "SIEM", "url": "https://siem.example.com/"}
# (method, path suffix, body, text the message must contain)
BAD_BODIES: list[tuple[str, dict[str, Any] | list[Any] | str, str]] = [
    ("create", {"url": "https://siem.example.com/"}, "name: Field required"),
    ("create", {"name": "SIEM"}, "url: Field required"),
    ("create", {**VALID, "name": ""}, "name: String should have at least 1 character"),
    ("create", {**VALID, "name": "n" * 201}, "name: String should have at most 200 characters"),
    ("create", {**VALID, "event_types": ["pro.atmos.Billing.*"]},
     "event_types: Value error, 'pro.atmos.Billing.*' is not an event-type glob"),
    ("create", {**VALID, "event_types": ["pro atmos"]}, "event_types"),
    ("create", {**VALID, "event_types": ["pro.atmos..x"]}, "event_types"),
    ("create", {**VALID, "event_types": "pro.atmos.*"}, "event_types: Input should be"),
    ("create", {**VALID, "event_types": ["a.*"] * 51}, "event_types: Value error, at most 50"),
    ("create", {**VALID, "colour": "red"}, "colour: Extra inputs are not permitted"),
    ("create", {**VALID, "secret": "whsec_x"}, "secret: Extra inputs are not permitted"),
    ("create", {**VALID, "enabled": "perhaps"}, "enabled: Input should be a valid boolean"),
    ("create", {**VALID, "headers": {"X-A": 1}}, "headers.X-A: Input should be a valid string"),
    ("create", {**VALID, "headers": ["X-A"]}, "headers: Input should be a valid dictionary"),
    ("create", {**VALID, "url": 5}, "url: Input should be a valid string"),
    # PostgreSQL cannot store NUL: these were 500s there before the models refused them.
    ("create", {**VALID, "name": "a\x00b"}, "name: Value error, must not contain control"),
    ("create", {**VALID, "name": "a\nb"}, "name: Value error, must not contain control"),
    ("create", {**VALID, "description": "x\x00"},
     "description: Value error, must not contain control characters other than tab"),
    ("create", [VALID], "Input should be a valid dictionary"),
    ("create", "not json", "JSON decode error"),
    ("patch", {"colour": "red"}, "colour: Extra inputs are not permitted"),
    ("patch", {"event_types": ["Pro.*"]}, "event_types: Value error, 'Pro.*' is not an"),
    ("patch", {"name": ""}, "name: String should have at least 1 character"),
    ("patch", {"description": "\x00"}, "description: Value error, must not contain control"),
    ("workspace", {"name": "Acme", "plan": "platinum"},
     "plan: unknown plan 'platinum'; known plans: business, enterprise, free, team"),
    ("workspace", {"plan": "enterprise"}, "name: Field required"),
    ("workspace", {"name": "Acme\x00", "plan": "enterprise"},
     "name: Value error, must not contain control characters"),
    ("workspace", {"name": "Acme", "plan": "enterprise\x00"},
     "plan: Value error, must not contain control characters"),
    ("workspace", {"name": "Acme"}, "plan: Field required"),
    ("workspace", {"name": "Acme", "plan": "enterprise", "token": "x"},
     "token: Extra inputs are not permitted"),
]


@pytest.mark.parametrize(("where", "body", "expected"), BAD_BODIES,
                         ids=[f"{w}-{e[:30]}" for w, _, e in BAD_BODIES])
def test_bad_bodies_are_422_naming_the_field(shared_api: ApiServer, where: str,
                                              body: dict[str, Any] | list[Any] | str,
                                              expected: str) -> None:
    ws, token = shared_api.create_workspace()
    base = f"/v1/workspaces/{ws}/destinations"
    if where == "patch":
        method, path = "PATCH", f"{base}/{shared_api.create_destination(ws, token)['id']}"
    elif where == "workspace":
        method, path, token = "POST", "/v1/workspaces", shared_api.admin_token or ""
    else:
        method, path = "POST", base
    outbox = shared_api.outbox_count()
    if isinstance(body, str):
        response = shared_api.call(method, path, token, content=body,
                                   headers={"Content-Type": "application/json"})
    else:
        response = shared_api.call(method, path, token, json=body)
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert expected in error["message"]
    assert shared_api.outbox_count() == outbox


def test_descriptions_may_span_lines(shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    dest = shared_api.create_destination(ws, token, description="Line one\n\tLine two\r\n")
    assert dest["description"] == "Line one\n\tLine two\r\n"


@pytest.mark.parametrize("path", [
    "/v1/workspaces/{ws}%00/destinations",
    "/v1/workspaces/%00/destinations",
    "/v1/workspaces/{ws}/destinations/dst_%00",
    "/v1/workspaces/{ws}/destinations/%ED%A0%80",
    "/v1/workspaces/{ws}/destinations/" + "x" * 300,
])
@pytest.mark.parametrize("as_admin", [False, True])
def test_ids_that_cannot_exist_are_404(shared_api: ApiServer, path: str, as_admin: bool) -> None:
    """Was a 500 on PostgreSQL for NUL (a text parameter it refuses), for the admin above all."""
    ws, token = shared_api.create_workspace()
    response = shared_api.call("GET", path.format(ws=ws),
                               shared_api.admin_token if as_admin else token)
    assert response.status_code == 404, response.text
    assert error_of(response)["code"] == "not_found"
