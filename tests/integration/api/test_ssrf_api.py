"""Contract section 3 through the API: refused URLs are 422 naming the problem, on create and PATCH.

The table is the unit suite's (``tests/unit/wire/test_ssrf.py``); names resolve
through the suite's fake resolver only, and nothing is ever connected to: the
refusals happen before any socket exists, and accepted destinations are never
tested here.
"""

from __future__ import annotations

import pytest

from auditrelay.api.service import Service
from auditrelay.schemas.destinations import url_hint
from auditrelay.schemas.errors import InvalidInputError
from auditrelay.wire.ssrf import MAX_URL_LENGTH, validate_destination_url
from tests.integration.api.conftest import ApiServer, error_of
from tests.unit.wire.test_ssrf import GENERIC, REFUSED, make_resolver


def _expected(url: str, expected: str) -> str:
    # Longer than the body model's limit: pydantic refuses it first, naming the field.
    if len(url) > MAX_URL_LENGTH:
        return "url: String should have at most 2048 characters"
    # A refused name is answered without its address (no oracle of internal DNS); the
    # unit table's address and reason are what operators see at DEBUG.
    try:
        validate_destination_url(url, resolver=make_resolver(), allow_private_cidrs=())
    except InvalidInputError as exc:
        if GENERIC in str(exc):
            return GENERIC
    return expected


CASES = [(url, _expected(url, expected)) for url, expected in REFUSED]
PATCH_CASES = [
    ("https://127.0.0.1/", "host 127.0.0.1 is a loopback address"),
    ("https://metadata.example.com/", GENERIC),
    ("https://[::ffff:127.0.0.1]/", "IPv4-mapped IPv6 address embedding 127.0.0.1"),
    ("http://siem.example.com/", "plain http:// is accepted only inside"),
    ("https://localhost/", "host localhost is a local name"),
    ("https://user:pass@siem.example.com/", "userinfo (user:password@) is not allowed"),
]
ACCEPTED = [
    ("https://siem.example.com/ingest?token=abc", "https://siem.example.com/ingest?token=abc"),
    ("https://v6.example.com/", "https://v6.example.com/"),
    ("https://dual.example.com:8443/x", "https://dual.example.com:8443/x"),
    ("HTTPS://SIEM.Example.COM.", "https://siem.example.com/"),
    ("https://b\u00fccher.example.com/", "https://xn--bcher-kva.example.com/"),
    ("https://93.184.216.34/in", "https://93.184.216.34/in"),
    ("https://[2606:4700::1111]:8443/", "https://[2606:4700::1111]:8443/"),
]


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize(("url", "expected"), CASES, ids=[u[:50] for u, _ in CASES])
def test_refused_on_create(shared_api: ApiServer, url: str, expected: str) -> None:
    ws, token = shared_api.create_workspace()
    outbox = shared_api.outbox_count()
    response = shared_api.call("POST", f"/v1/workspaces/{ws}/destinations", token,
                               json={"name": "SIEM", "url": url})
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert error["message"].startswith("url: ")
    assert expected in error["message"]
    # Nothing written: no destination, no outbox entry (config record, audit event).
    listed = shared_api.call("GET", f"/v1/workspaces/{ws}/destinations", token)
    assert listed.json() == {"items": []}
    assert shared_api.outbox_count() == outbox


@pytest.mark.parametrize(("url", "expected"), PATCH_CASES, ids=[u for u, _ in PATCH_CASES])
def test_refused_on_patch(shared_api: ApiServer, url: str, expected: str) -> None:
    ws, token = shared_api.create_workspace()
    dest = shared_api.create_destination(ws, token)
    path = f"/v1/workspaces/{ws}/destinations/{dest['id']}"
    outbox = shared_api.outbox_count()
    response = shared_api.call("PATCH", path, token, json={"url": url, "name": "renamed"})
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["message"].startswith("url: ")
    assert expected in error["message"]
    after = shared_api.call("GET", path, token).json()
    assert (after["url"], after["name"]) == (dest["url"], dest["name"])  # rolled back whole
    assert stored_url(shared_api, dest["id"]) == "https://siem.example.com/ingest"
    assert after["updated_at"] == dest["updated_at"]
    assert shared_api.outbox_count() == outbox


@pytest.mark.parametrize(("url", "stored"), ACCEPTED, ids=[u for u, _ in ACCEPTED])
def test_public_destinations_are_accepted(shared_api: ApiServer, url: str, stored: str) -> None:
    ws, token = shared_api.create_workspace()
    dest = shared_api.create_destination(ws, token, url=url)
    # The re-serialised URL is stored (encrypted), never the input; reads show it masked.
    assert stored_url(shared_api, dest["id"]) == stored
    assert dest["url"] == url_hint(stored)
    # Also on PATCH, back and forth.
    path = f"/v1/workspaces/{ws}/destinations/{dest['id']}"
    response = shared_api.call("PATCH", path, token, json={"url": "https://siem.example.com/b"})
    assert response.status_code == 200, response.text
    assert response.json()["url"] == "https://siem.example.com/\u2026"
    assert stored_url(shared_api, dest["id"]) == "https://siem.example.com/b"
    response = shared_api.call("PATCH", path, token, json={"url": url})
    assert response.json()["url"] == url_hint(stored)
    assert stored_url(shared_api, dest["id"]) == stored


def stored_url(api: ApiServer, dest_id: str) -> str:
    """The URL a destination's row holds, decrypted with the API's own box."""
    row = api.destination_row(dest_id)
    assert row is not None
    service: Service = api.app.state.service
    return service.box.decrypt(row.url_encrypted)


def test_names_are_resolved_by_the_injected_resolver(shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    before = len(shared_api.resolver.calls)
    response = shared_api.call("POST", f"/v1/workspaces/{ws}/destinations", token,
                               json={"name": "x", "url": "https://private.example.com:8443/"})
    assert response.status_code == 422
    message = error_of(response)["message"]
    assert f"private.example.com {GENERIC}" in message
    assert "10.0.0.1" not in message
    assert shared_api.resolver.calls[before:] == [("private.example.com", 8443)]
