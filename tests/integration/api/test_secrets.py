"""Secrets never leak: not in responses (but the two that show them once), logs or the database.

One full session (workspace, destination with a credential header, get, list,
patch, test delivery, rotation, delete) runs with every log record captured at
DEBUG, uvicorn's loggers included, and every response kept.
"""

from __future__ import annotations

import logging
import re
import ssl

import pytest
from sqlalchemy import text

from tests.integration.api.conftest import LOOPBACK, ApiServer, MakeApi
from tests.support.servers import Receiver

UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]+")


def _everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    lines = []
    for record in caplog.records:
        lines.append(record.getMessage())
        lines.append(repr(record.args))
        if record.exc_info:
            lines.append(logging.Formatter().formatException(record.exc_info))
    return "\n".join(lines)


def test_secrets_appear_only_where_shown_once(
        make_api: MakeApi, client_tls: ssl.SSLContext, receiver: Receiver,
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    # SQL statements with their parameters: no plaintext may be written either.
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        caplog.set_level(logging.DEBUG, logger=name)
        # Another test may have configured uvicorn's logging not to propagate.
        monkeypatch.setattr(logger, "propagate", True)
        monkeypatch.setattr(logger, "disabled", False)

    api: ApiServer = make_api(publish=True, ssl_context=client_tls,
                              settings={"allow_private_cidrs": LOOPBACK})
    header_value = "tok_header_credential_5f2c91"
    patched_value = "tok_header_credential_after_patch_77e1"

    created_ws = api.call("POST", "/v1/workspaces", api.admin_token,
                          json={"name": "Acme", "plan": "enterprise"})
    assert created_ws.status_code == 201
    ws, token = created_ws.json()["id"], created_ws.json()["token"]
    base = f"/v1/workspaces/{ws}/destinations"

    created = api.call("POST", base, token, json={
        "name": "SIEM", "url": receiver.url, "headers": {"X-Api-Key": header_value}})
    assert created.status_code == 201
    dest, first_secret = created.json()["id"], created.json()["secret"]
    assert created.json()["headers"] == {"X-Api-Key": "********"}
    path = f"{base}/{dest}"

    got = api.call("GET", path, token)
    listed = api.call("GET", base, token)
    patched = api.call("PATCH", path, token,
                       json={"name": "SIEM 2", "headers": {"X-Api-Key": patched_value}})
    tested = api.call("POST", f"{path}/test", token)
    rotated = api.call("POST", f"{path}/rotate-secret", token)
    second_secret = rotated.json()["secret"]
    assert [r.status_code for r in (got, listed, patched, tested, rotated)] == \
        [200, 200, 200, 200, 200]
    assert tested.json()["delivered"] is True
    # The receiver, and only it, got the credential header.
    assert receiver.requests[0].headers["x-api-key"] == patched_value

    # At rest: ciphertext only.
    with api.store.engine.connect() as conn:
        row = conn.execute(text(
            "SELECT secret_encrypted, previous_secret_encrypted, headers_encrypted "
            "FROM destinations WHERE id = :id"), {"id": dest}).one()
        token_hash = conn.execute(text("SELECT token_hash FROM workspace_tokens "
                                       "WHERE workspace_id = :id"), {"id": ws}).scalar_one()
    for stored in row:
        assert stored.startswith("v1:")
    stored_all = "".join(row)
    for plain in (first_secret, second_secret, header_value, patched_value):
        assert plain not in stored_all
        assert plain.removeprefix("whsec_") not in stored_all
    assert token not in token_hash
    assert re.fullmatch(r"[0-9a-f]{64}", token_hash)

    deleted = api.call("DELETE", path, token)
    assert deleted.status_code == 204
    assert api.call("GET", path, token).status_code == 404

    # Every response body: each secret only where it is shown once.
    bodies = [r.text for r in api.responses]
    assert len(bodies) == 9
    assert [b for b in bodies if token in b] == [created_ws.text]
    assert [b for b in bodies if first_secret in b] == [created.text]
    assert [b for b in bodies if second_secret in b] == [rotated.text]
    assert [b for b in bodies if SECRET.search(b)] == [created.text, rotated.text]
    for value in (header_value, patched_value):
        assert not [b for b in bodies if value in b]
        assert not [r for r in api.responses if value in str(r.headers)]

    # Every log line: none at all.
    logged = _everything_logged(caplog)
    assert "POST /v1/workspaces" in logged  # uvicorn's access log was captured
    names = {r.name for r in caplog.records}
    assert {"uvicorn.access", "sqlalchemy.engine.Engine"} <= names
    # httpx would log each request's URL (a credential for some receivers): it stays quiet.
    assert "httpx" not in names
    for secret in (token, first_secret, second_secret, header_value, patched_value):
        assert secret not in logged
    assert not SECRET.search(logged)
    assert api.admin_token is not None
    assert api.admin_token not in logged
