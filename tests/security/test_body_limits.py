"""Request bodies over ``api_max_body_bytes`` are refused before they are read (issue #11).

Against the real API over real HTTP: a body one byte over the limit is answered 413
``payload_too_large`` whether or not the request carries a token, on the JSON API
and on the settings page's forms, sent with a Content-Length or chunked; a body of
exactly the limit gets the endpoint's own answer. Each over-limit body is otherwise
valid, so size is the only reason left to refuse it. And memory: 50 MiB sent to a
separate API process (``auditrelay api``) barely moves its resident memory.

What uvicorn never lets through (a malformed Content-Length, an app that keeps
reading after the refusal) is checked on the middleware itself, as an ASGI app.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from auditrelay.api.limits import BodyLimit
from auditrelay.schemas.settings import Settings
from tests.integration.api.conftest import ADMIN_TOKEN, ApiServer, error_of
from tests.integration.test_metrics import Child, answers
from tests.integration.web.conftest import PAGE, csrf_of, sign_in
from tests.support.pipeline import worker_env
from tests.support.polling import wait_until
from tests.support.servers import free_port
from tests.support.settings import make_settings

LIMIT = 256 * 1024
MIB = 1024 * 1024
FRAMINGS = ["content-length", "chunked"]
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def padded_json(value: dict[str, Any], size: int) -> bytes:
    """``value`` as JSON, padded with trailing whitespace (still valid) to ``size`` bytes."""
    body = json.dumps(value).encode()
    assert len(body) <= size
    return body.ljust(size)


def padded_form(fields: dict[str, str], size: int) -> bytes:
    """``fields`` urlencoded plus a ``pad`` field the handlers ignore, ``size`` bytes in all."""
    base = urlencode({**fields, "pad": ""}).encode()
    assert len(base) <= size
    return base + b"x" * (size - len(base))


def pieces(body: bytes, size: int = 16 * 1024) -> Iterator[bytes]:
    """``body`` in pieces: httpx sends a generator chunked (no Content-Length)."""
    for start in range(0, len(body), size):
        yield body[start:start + size]


def framed(body: bytes, framing: str) -> bytes | Iterator[bytes]:
    return body if framing == "content-length" else pieces(body)


def assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    error = error_of(response)
    assert error["code"] == "payload_too_large", error
    assert f"{LIMIT} bytes" in error["message"], error


def test_the_default_limit_is_256_kib(shared_api: ApiServer) -> None:
    assert Settings.model_fields["api_max_body_bytes"].default == LIMIT
    assert shared_api.settings.api_max_body_bytes == LIMIT


# -- the JSON API ----------------------------------------------------------------------------


def destination_body(size: int) -> bytes:
    return padded_json({"name": "SIEM", "url": "https://siem.example.com/in"}, size)


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("with_token", [True, False], ids=["token", "no-token"])
def test_an_api_body_over_the_limit_is_refused(shared_api: ApiServer, framing: str,
                                               with_token: bool) -> None:
    ws, token = shared_api.create_workspace()
    response = shared_api.call("POST", f"/v1/workspaces/{ws}/destinations",
                               token if with_token else None, headers=JSON,
                               content=framed(destination_body(LIMIT + 1), framing))
    assert_too_large(response)
    listed = shared_api.call("GET", f"/v1/workspaces/{ws}/destinations", token)
    assert listed.status_code == 200
    assert listed.json()["items"] == []


@pytest.mark.parametrize("framing", FRAMINGS)
def test_an_api_body_at_the_limit_gets_the_endpoints_answer(shared_api: ApiServer,
                                                            framing: str) -> None:
    ws, token = shared_api.create_workspace()
    path = f"/v1/workspaces/{ws}/destinations"
    anonymous = shared_api.call("POST", path, headers=JSON,
                                content=framed(destination_body(LIMIT), framing))
    assert anonymous.status_code == 401, anonymous.text
    assert error_of(anonymous)["code"] == "unauthorized"
    created = shared_api.call("POST", path, token, headers=JSON,
                              content=framed(destination_body(LIMIT), framing))
    assert created.status_code == 201, created.text


# -- the settings page's forms ---------------------------------------------------------------


def sign_in_form(client: httpx.Client, ws: str, token: str, size: int) -> bytes:
    """The sign-in form of ``ws`` with ``token``, fetched (cookie and CSRF) and padded."""
    page = client.get(PAGE.format(ws=ws) + "/login")
    assert page.status_code == 200
    return padded_form({"token": token, "csrf": csrf_of(page.text)}, size)


@pytest.mark.parametrize("framing", FRAMINGS)
def test_a_sign_in_form_over_the_limit_is_refused(shared_api: ApiServer,
                                                  framing: str) -> None:
    ws, token = shared_api.create_workspace()
    login = PAGE.format(ws=ws) + "/login"
    with httpx.Client(base_url=shared_api.base_url, timeout=30.0) as client:
        over = client.post(login, headers=FORM,
                           content=framed(sign_in_form(client, ws, token, LIMIT + 1), framing))
        assert_too_large(over)
        assert "ar_session" not in client.cookies
        at = client.post(login, headers=FORM,
                         content=framed(sign_in_form(client, ws, token, LIMIT), framing))
        assert at.status_code == 303, at.text
        assert at.headers["location"] == PAGE.format(ws=ws)


@pytest.mark.parametrize("framing", FRAMINGS)
def test_a_signed_in_form_over_the_limit_is_refused(shared_api: ApiServer,
                                                    framing: str) -> None:
    ws, token = shared_api.create_workspace()
    with sign_in(shared_api, ws, token) as client:
        page = PAGE.format(ws=ws)
        csrf = csrf_of(client.get(page).text)

        def add(size: int, name: str) -> httpx.Response:
            form = padded_form({"csrf": csrf, "name": name,
                                "url": "https://siem.example.com/in"}, size)
            return client.post(page + "/destinations", headers=FORM,
                               content=framed(form, framing))

        assert_too_large(add(LIMIT + 1, "refused"))
        assert add(LIMIT, "accepted").status_code == 201
    listed = shared_api.call("GET", f"/v1/workspaces/{ws}/destinations", token)
    assert [d["name"] for d in listed.json()["items"]] == ["accepted"]


# -- memory of a real API process ------------------------------------------------------------


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` (resident now) and ``VmHWM`` (its peak) of ``pid``, in KiB."""
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) for name in ("VmRSS", "VmHWM")}


def reset_peak(pid: int) -> None:
    # Writing 5 resets VmHWM to the current RSS (proc(5), clear_refs; our own child).
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@pytest.fixture
def api_process(kafka_bootstrap: str, unique_name: str,
                tmp_path: Path) -> Iterator[tuple[str, int]]:
    """``auditrelay api`` in a process of its own: its base URL and pid."""
    settings = make_settings(tmp_path, kafka_bootstrap, f"test.{unique_name}.")
    env = {**worker_env(settings), "AUDITRELAY_ADMIN_TOKEN": ADMIN_TOKEN}
    subprocess.run([sys.executable, "-m", "auditrelay.ops", "db", "upgrade"], env=env,
                   check=True, capture_output=True, timeout=120)
    port = free_port()
    child = Child(["api", "--port", str(port)], env, tmp_path / "api.log").start()
    try:
        base_url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            assert child.alive(), f"the API exited{child.tail()}"
            return answers(base_url + "/healthz")

        wait_until(ready, 60, lambda: f"the API answering /healthz{child.tail()}")
        assert child.proc is not None
        yield base_url, child.proc.pid
    finally:
        child.stop()


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("with_token", [True, False], ids=["token", "no-token"])
def test_a_50_mib_body_does_not_grow_the_api_process(api_process: tuple[str, int],
                                                     framing: str, with_token: bool) -> None:
    base_url, pid = api_process
    total, block = 50 * MIB, b"x" * MIB

    def body() -> Iterator[bytes]:
        for _ in range(total // len(block)):
            yield block

    headers = dict(JSON)
    if framing == "content-length":
        headers["Content-Length"] = str(total)  # httpx then sends the generator unchunked
    if with_token:
        headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    before = memory_kib(pid)
    reset_peak(pid)
    with httpx.Client(base_url=base_url, timeout=60.0) as client:
        response = client.post("/v1/workspaces", headers=headers, content=body())
    after = memory_kib(pid)
    assert after["VmRSS"] - before["VmRSS"] < 20 * 1024, (before, after)
    assert after["VmHWM"] - before["VmRSS"] < 20 * 1024, (before, after)
    assert_too_large(response)


# -- the middleware as an ASGI app -----------------------------------------------------------


def run_asgi(app: Any, headers: list[tuple[bytes, bytes]],
             chunks: list[bytes]) -> tuple[list[dict[str, Any]], int]:
    """Serve one POST to ``app``: the messages it sent, and how many body reads it got."""
    sent: list[dict[str, Any]] = []
    served = 0

    async def receive() -> dict[str, Any]:
        nonlocal served
        served += 1
        return {"type": "http.request", "body": chunks[served - 1],
                "more_body": served < len(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    asyncio.run(app(scope, receive, send))
    return sent, served


def answer_of(sent: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"], sent
    return int(sent[0]["status"]), json.loads(sent[1]["body"])


@pytest.mark.parametrize("values", [[b"12x"], [b"-1"], [b""], [b"10", b"11"]],
                         ids=["letters", "negative", "empty", "conflicting"])
def test_a_malformed_content_length_is_a_bad_request(values: list[bytes]) -> None:
    # uvicorn refuses these itself before any app; other servers may pass them on.
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not be called")

    sent, served = run_asgi(BodyLimit(app, max_bytes=1024),
                            [(b"content-length", v) for v in values], [b""])
    status, body = answer_of(sent)
    assert (status, body["error"]["code"]) == (400, "invalid_request"), body
    assert served == 0


def test_after_the_refusal_the_app_gets_no_more_of_the_body() -> None:
    reads: list[str] = []

    async def stubborn(scope: Any, receive: Any, send: Any) -> None:
        # An app that swallows the refusal, keeps reading, then answers on its own.
        for _ in range(5):
            try:
                reads.append(f"{len((await receive())['body'])} bytes")
            except Exception as exc:  # what it swallows is the point
                reads.append(type(exc).__name__)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sent, served = run_asgi(BodyLimit(stubborn, max_bytes=1024), [], [b"x" * 600] * 5)
    assert served == 2
    assert reads == ["600 bytes"] + ["_BodyTooLarge"] * 4
    status, body = answer_of(sent)
    assert (status, body["error"]["code"]) == (413, "payload_too_large"), body
    assert "1024 bytes" in body["error"]["message"]
