"""The settings page's cookie is a server-side session, not the API token (issue #11).

The cookie was the raw workspace token, valid for ever: a copy of it (a proxy log, a
shared machine, a backup of the browser profile) was the API token itself, and
signing out only asked the browser to forget it. Now signing in opens a session whose
random id is the cookie; the database keeps only its hash. A session unused for 12 h
(``AUDITRELAY_PAGE_SESSION_IDLE_SECONDS``) is refused and deleted, signing out deletes
it, revoking its token deletes it (and ends its live-status stream), and the CSRF
token is bound to the session, not to the token.
"""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta

import httpx
from sqlalchemy import func, select, update

from auditrelay.api.page_sessions import MAX_SESSIONS_PER_TOKEN
from auditrelay.store.db import PageSession, WorkspaceToken, utcnow
from tests.integration.api.conftest import ApiServer
from tests.integration.web.conftest import PAGE, anonymous, csrf_of, sign_in

COOKIE = "ar_session"
IDLE = timedelta(hours=12)  # the default of AUDITRELAY_PAGE_SESSION_IDLE_SECONDS
#: The stream checks its session every 2 s; this leaves room for a slow machine.
STREAM_END_DEADLINE = 10.0


def _cookie(client: httpx.Client) -> str:
    value = client.cookies.get(COOKIE)
    assert value, "not signed in"
    return value


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _row(api: ApiServer, session_id: str) -> PageSession | None:
    with api.store.transaction() as session:
        return session.get(PageSession, _hash(session_id))


def _age(api: ApiServer, session_id: str, by: timedelta) -> None:
    """Move the session's last use back by ``by``, as if nobody had used it since."""
    with api.store.transaction() as session:
        session.execute(update(PageSession).where(PageSession.id_hash == _hash(session_id))
                        .values(last_seen_at=utcnow() - by))


def _replay(api: ApiServer, ws: str, session_id: str) -> httpx.Response:
    """The page requested with a copy of a session cookie, from another client."""
    with anonymous(api) as client:
        client.cookies.set(COOKIE, session_id)
        return client.get(PAGE.format(ws=ws))


def _is_sign_in_redirect(response: httpx.Response, ws: str) -> bool:
    return (response.status_code == 303
            and response.headers["location"] == PAGE.format(ws=ws) + "/login")


def _token_id(api: ApiServer, ws: str) -> str:
    response = api.call("GET", f"/v1/workspaces/{ws}/tokens", api.admin_token)
    token_id: str = response.json()["items"][0]["id"]
    return token_id


def test_the_cookie_is_a_random_session_id_stored_only_hashed(shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    with sign_in(shared_api, ws, token) as first, sign_in(shared_api, ws, token) as second:
        one, two = _cookie(first), _cookie(second)
        assert first.get(PAGE.format(ws=ws)).status_code == 200
    assert token not in (one, two)
    assert not one.startswith("art_")
    assert len(one) >= 43
    assert one != two  # a session per sign-in, not one per token
    row = _row(shared_api, one)
    assert row is not None
    assert row.token_id == _token_id(shared_api, ws)
    assert row.workspace_id == ws
    with shared_api.store.transaction() as session:
        stored = [str(value) for r in session.execute(select(PageSession)).scalars()
                  for value in vars(r).values()]
    assert not any(one in value or token in value for value in stored)


def test_a_session_idle_for_12_hours_is_refused_and_deleted(shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    with sign_in(shared_api, ws, token) as client:
        session_id = _cookie(client)
        # Idle for a little less than the limit: still open, and its use is noted.
        _age(shared_api, session_id, IDLE - timedelta(minutes=5))
        assert client.get(PAGE.format(ws=ws)).status_code == 200
        row = _row(shared_api, session_id)
        assert row is not None
        assert utcnow() - row.last_seen_at < timedelta(minutes=1)

        _age(shared_api, session_id, IDLE + timedelta(seconds=1))
        assert _is_sign_in_redirect(client.get(PAGE.format(ws=ws)), ws)
        assert _row(shared_api, session_id) is None
        # A form post with the expired session goes to sign-in too, and changes nothing.
        posted = client.post(PAGE.format(ws=ws) + "/destinations",
                             data={"csrf": "x", "name": "n", "url": "https://siem.example.com"})
        assert _is_sign_in_redirect(posted, ws)


def test_a_session_is_used_at_most_once_a_minute(shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    with sign_in(shared_api, ws, token) as client:
        session_id = _cookie(client)
        row = _row(shared_api, session_id)
        assert row is not None
        for _ in range(3):
            assert client.get(PAGE.format(ws=ws)).status_code == 200
        again = _row(shared_api, session_id)
        assert again is not None
        assert again.last_seen_at == row.last_seen_at


def test_sign_out_deletes_the_session_on_the_server(shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    with sign_in(shared_api, ws, token) as client:
        session_id = _cookie(client)
        csrf = csrf_of(client.get(PAGE.format(ws=ws)).text)
        done = client.post(PAGE.format(ws=ws) + "/logout", data={"csrf": csrf})
        assert _is_sign_in_redirect(done, ws)
    assert _row(shared_api, session_id) is None
    # A copy of the cookie kept anywhere opens nothing any more.
    assert _is_sign_in_redirect(_replay(shared_api, ws, session_id), ws)
    # The token itself is untouched.
    assert shared_api.call("GET", f"/v1/workspaces/{ws}/events", token).status_code == 200


def test_revoking_the_token_ends_its_sessions_and_their_streams(
        shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    created = shared_api.call("POST", f"/v1/workspaces/{ws}/tokens", token,
                              json={"name": "laptop"}).json()
    with sign_in(shared_api, ws, created["token"]) as doomed, \
            sign_in(shared_api, ws, token) as kept:
        doomed_id = _cookie(doomed)
        with doomed.stream("GET", PAGE.format(ws=ws) + "/stream",
                           timeout=STREAM_END_DEADLINE) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            assert next(line for line in lines if line.startswith("data: "))
            revoked = shared_api.call("DELETE", f"/v1/workspaces/{ws}/tokens/{created['id']}",
                                      token)
            assert revoked.status_code == 204
            started = time.monotonic()
            rest = list(lines)  # a read timeout (the stream going on) fails the test
            assert time.monotonic() - started < STREAM_END_DEADLINE
            assert not any(line.startswith("data: ") for line in rest)
        assert _row(shared_api, doomed_id) is None
        assert _is_sign_in_redirect(doomed.get(PAGE.format(ws=ws)), ws)
        assert kept.get(PAGE.format(ws=ws)).status_code == 200


def test_sign_out_ends_the_stream(shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    with sign_in(shared_api, ws, token) as client:
        csrf = csrf_of(client.get(PAGE.format(ws=ws)).text)
        with client.stream("GET", PAGE.format(ws=ws) + "/stream",
                           timeout=STREAM_END_DEADLINE) as stream:
            lines = stream.iter_lines()
            assert next(line for line in lines if line.startswith("data: "))
            done = client.post(PAGE.format(ws=ws) + "/logout", data={"csrf": csrf})
            assert _is_sign_in_redirect(done, ws)
            started = time.monotonic()
            list(lines)
            assert time.monotonic() - started < STREAM_END_DEADLINE


def test_the_csrf_token_is_bound_to_the_session(shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    add = {"name": "forged", "url": "https://siem.example.com/in"}
    with sign_in(shared_api, ws, token) as victim, sign_in(shared_api, ws, token) as other:
        foreign = csrf_of(other.get(PAGE.format(ws=ws)).text)
        own = csrf_of(victim.get(PAGE.format(ws=ws)).text)
        assert foreign != own
        # Another session of the same token: its form token opens nothing here.
        refused = victim.post(PAGE.format(ws=ws) + "/destinations", data={"csrf": foreign, **add})
        assert refused.status_code == 403
        # Signed out and in again: the old form token died with the old session.
        assert other.post(PAGE.format(ws=ws) + "/logout", data={"csrf": foreign}
                          ).status_code == 303
    with sign_in(shared_api, ws, token) as again:
        refused = again.post(PAGE.format(ws=ws) + "/destinations", data={"csrf": foreign, **add})
        assert refused.status_code == 403
        accepted = again.post(PAGE.format(ws=ws) + "/destinations",
                              data={"csrf": csrf_of(again.get(PAGE.format(ws=ws)).text), **add})
        assert accepted.status_code == 201
    assert len(shared_api.call("GET", f"/v1/workspaces/{ws}/destinations",
                               token).json()["items"]) == 1


def test_sign_in_replaces_a_planted_session_cookie(shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    with sign_in(shared_api, ws, token) as earlier:
        old = _cookie(earlier)
    with anonymous(shared_api) as client:
        client.cookies.set(COOKIE, old, path=PAGE.format(ws=ws))
        login = PAGE.format(ws=ws) + "/login"
        done = client.post(login, data={"token": token, "csrf": csrf_of(client.get(login).text)})
        assert done.status_code == 303
        assert done.cookies.get(COOKIE) not in (None, old)
    # The browser's previous session ended with the new sign-in.
    assert _row(shared_api, old) is None


def test_sign_in_deletes_expired_sessions(shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    with sign_in(shared_api, ws, token) as stale:
        stale_id = _cookie(stale)
    _age(shared_api, stale_id, IDLE + timedelta(hours=1))
    assert _row(shared_api, stale_id) is not None  # nobody presented it since
    with sign_in(shared_api, ws, token):
        pass
    assert _row(shared_api, stale_id) is None
    with shared_api.store.transaction() as session:
        expired = session.scalar(select(func.count()).select_from(PageSession)
                                 .where(PageSession.last_seen_at < utcnow() - IDLE))
    assert expired == 0


def test_page_use_counts_as_use_of_its_token(shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    token_id = _token_id(shared_api, ws)
    with sign_in(shared_api, ws, token) as client:
        with shared_api.store.transaction() as session:
            session.execute(update(WorkspaceToken).where(WorkspaceToken.id == token_id)
                            .values(last_used_at=None))
        _age(shared_api, _cookie(client), timedelta(minutes=2))
        assert client.get(PAGE.format(ws=ws)).status_code == 200
    with shared_api.store.transaction() as session:
        row = session.get(WorkspaceToken, token_id)
        assert row is not None
        assert row.last_used_at is not None


def test_one_token_holds_a_bounded_number_of_sessions(shared_api: ApiServer) -> None:
    """Signing in over and over ends the least recently used session beyond the cap."""
    ws, token = shared_api.create_workspace()
    cookies: list[str] = []
    for _ in range(MAX_SESSIONS_PER_TOKEN + 2):
        with sign_in(shared_api, ws, token) as client:
            cookies.append(_cookie(client))
    with shared_api.store.transaction() as session:
        held = session.scalar(select(func.count()).select_from(PageSession)
                              .where(PageSession.workspace_id == ws))
    assert held == MAX_SESSIONS_PER_TOKEN
    assert _row(shared_api, cookies[0]) is None
    assert _row(shared_api, cookies[-1]) is not None
    assert _is_sign_in_redirect(_replay(shared_api, ws, cookies[0]), ws)
    assert _replay(shared_api, ws, cookies[-1]).status_code == 200
