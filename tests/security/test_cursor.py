"""A crafted events cursor is refused, never a 500 (issue #11).

``GET /v1/workspaces/{ws}/events`` decodes its ``cursor`` (base64url of JSON
``[time, id]``). A time valid as written but out of range in UTC
(``0001-01-01T00:00:00+14:00``) raised ``OverflowError``: a 500. Every cursor that
does not decode into a valid position (too long, not base64, not JSON, wrong shape
or types, a time out of range or without offset, a bad id) answers one way
(docs/archive.md): 400 ``invalid_cursor``, naming the cursor.
"""

from __future__ import annotations

import base64
import json

import pytest

from tests.integration.api.conftest import ApiServer, error_of


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor(value: object) -> str:
    return _b64(json.dumps(value).encode())


BAD_CURSORS = {
    "utc overflow below": _cursor(["0001-01-01T00:00:00+14:00", "x"]),
    "utc overflow above": _cursor(["9999-12-31T23:59:59-14:00", "x"]),
    "not base64": "!!!***",
    "not json": _b64(b"not json at all"),
    "not utf-8": _b64(b"\xff\xfe[1]"),
    "one element": _cursor(["2026-11-25T10:30:00+00:00"]),
    "three elements": _cursor(["2026-11-25T10:30:00+00:00", "aud_x", "more"]),
    "an object": _cursor({"time": "2026-11-25T10:30:00+00:00", "id": "aud_x"}),
    "a number": _cursor(12),
    "time not a string": _cursor([1, "aud_x"]),
    "id not a string": _cursor(["2026-11-25T10:30:00+00:00", 7]),
    "no offset": _cursor(["2026-11-25T10:30:00", "aud_x"]),
    "month 13": _cursor(["2026-13-01T00:00:00+00:00", "aud_x"]),
    "offset of 25 hours": _cursor(["2026-11-25T10:30:00+25:00", "aud_x"]),
    "huge year": _cursor(["99999999-01-01T00:00:00+00:00", "aud_x"]),
    "NUL in the id": _cursor(["2026-11-25T10:30:00+00:00", "aud_\x00"]),
    "empty id": _cursor(["2026-11-25T10:30:00+00:00", ""]),
    "deep nesting": _b64(b"[" * 300 + b"]" * 300),
    "not ascii": "WyIyMDI2LTExLTI1VDEwOjMwOjAwKzAwOjAwIiwiYXVkX3giXQ\u00e9",
    "too long": _cursor(["2026-11-25T10:30:00+00:00", "aud_" + "x" * 1000]),
    "too long, not base64": "!" * 5000,
}


@pytest.mark.parametrize("cursor", list(BAD_CURSORS.values()), ids=list(BAD_CURSORS))
def test_a_cursor_that_is_no_position_is_refused(shared_api: ApiServer, cursor: str) -> None:
    ws, token = shared_api.create_workspace()
    response = shared_api.call("GET", f"/v1/workspaces/{ws}/events", token,
                               params={"cursor": cursor})
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["code"] == "invalid_cursor"
    assert "cursor" in error["message"]


def test_a_well_formed_cursor_still_pages(shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    cursor = _cursor(["2026-11-25T10:30:00+14:00", "aud_01JD7Q0Z8N6Y0F3X5KQ2M1V9RT"])
    response = shared_api.call("GET", f"/v1/workspaces/{ws}/events", token,
                               params={"cursor": cursor})
    assert response.status_code == 200, response.text
    assert response.json() == {"items": [], "next_cursor": None}
