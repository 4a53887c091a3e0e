"""The settings page over HTTP: sign-in, isolation, CSRF, validation, secrets shown once.

A real API on loopback (SQLite, outbox unpublished); every client keeps its own
cookies, like one browser each.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import ClassVar, Literal

import pytest

from auditrelay.wire.client import Reply
from auditrelay.wire.kinds import KINDS
from auditrelay.wire.kinds.base import (
    Batch,
    Credentials,
    Kind,
    KindOptions,
    Request,
    Target,
    Verdict,
)
from tests.integration.api.conftest import ApiServer
from tests.integration.web.conftest import PAGE, WebUser, anonymous, csrf_of, sign_in

_SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]+")


def _dest_ids(html: str) -> list[str]:
    return re.findall(r'<tr id="dest-(dst_[a-z0-9]+)"', html)


# -- sign-in ---------------------------------------------------------------------------------


def test_without_a_session_the_page_redirects_to_sign_in(web_api: ApiServer) -> None:
    ws, _ = web_api.create_workspace()
    with anonymous(web_api) as client:
        for path in ("", "/stream", "/destinations/dst_x"):
            response = client.get(PAGE.format(ws=ws) + path)
            assert response.status_code == 303, path
            assert response.headers["location"] == PAGE.format(ws=ws) + "/login"


def test_sign_in_sets_a_strict_httponly_cookie_scoped_to_the_workspace(
        web_api: ApiServer) -> None:
    ws, token = web_api.create_workspace()
    with sign_in(web_api, ws, token) as client:
        page = client.get(PAGE.format(ws=ws))
        assert page.status_code == 200
        assert "Webhook destinations" in page.text
        assert token not in page.text
    with anonymous(web_api) as client:
        login = PAGE.format(ws=ws) + "/login"
        csrf = csrf_of(client.get(login).text)
        done = client.post(login, data={"token": token, "csrf": csrf})
    cookie = done.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert f"path={PAGE.format(ws=ws)}" in cookie
    assert "secure" not in cookie  # plain http on loopback; https would add it


def test_a_wrong_token_is_refused_on_the_sign_in_page(web_api: ApiServer) -> None:
    ws, _ = web_api.create_workspace()
    other_ws, other_token = web_api.create_workspace()
    login = PAGE.format(ws=ws) + "/login"
    with anonymous(web_api) as client:
        for token in ("art_wrong", other_token):
            csrf = csrf_of(client.get(login).text)
            response = client.post(login, data={"token": token, "csrf": csrf})
            assert response.status_code == 401
            assert "This token does not open this workspace." in response.text
            assert "ar_session" not in response.headers.get("set-cookie", "")
        assert other_ws != ws


def test_sign_in_without_the_form_token_is_refused(web_api: ApiServer) -> None:
    ws, token = web_api.create_workspace()
    with anonymous(web_api) as client:
        response = client.post(PAGE.format(ws=ws) + "/login", data={"token": token})
    assert response.status_code == 403
    assert "ar_session" not in response.headers.get("set-cookie", "")


def test_sign_out_ends_the_session(user: WebUser) -> None:
    response = user.post("/logout")
    assert response.status_code == 303
    assert user.get().status_code == 303


# -- isolation and plans ----------------------------------------------------------------------


def test_another_workspace_is_not_found(user: WebUser) -> None:
    other_ws, other_token = user.api.create_workspace(name="Other")
    theirs = user.api.create_destination(other_ws, other_token)
    # Our session cookie, sent to the other workspace's pages on purpose.
    cookie = {"ar_session": user.session_id}
    with anonymous(user.api) as client:
        client.cookies.update(cookie)
        for path in ("", "/stream", f"/destinations/{theirs['id']}"):
            response = client.get(PAGE.format(ws=other_ws) + path)
            assert response.status_code == 404, path
            assert theirs["name"] not in response.text or path == ""
            assert theirs["url"] not in response.text
    # Their destination through our own workspace's pages: not found either.
    assert user.get(f"/destinations/{theirs['id']}").status_code == 404
    assert user.post(f"/destinations/{theirs['id']}/disable").status_code == 404
    row = user.api.destination_row(theirs["id"])
    assert row is not None
    assert row.enabled


def test_a_plan_without_forwarding_sees_a_402_page(web_api: ApiServer) -> None:
    ws, token = web_api.create_workspace(plan="free")
    with sign_in(web_api, ws, token) as client:
        response = client.get(PAGE.format(ws=ws))
    assert response.status_code == 402
    assert "Your plan does not include forwarding" in response.text
    assert "enterprise" in response.text


# -- CSRF ------------------------------------------------------------------------------------


def test_a_post_without_or_with_a_wrong_csrf_token_changes_nothing(user: WebUser) -> None:
    assert user.add(name="kept").status_code == 201
    [dest] = _dest_ids(user.get().text)
    for csrf in ("", "0" * 64, csrf_of(user.get().text)[:-1] + "x"):
        response = user.post(f"/destinations/{dest}/disable", csrf=csrf)
        assert response.status_code == 403, csrf
        assert "security token" in response.text
        response = user.post("/destinations", {"name": "forged",
                                               "url": "https://siem.example.com/x"}, csrf=csrf)
        assert response.status_code == 403
    row = user.api.destination_row(dest)
    assert row is not None
    assert row.enabled
    assert len(_dest_ids(user.get().text)) == 1


def test_a_csrf_token_of_another_session_is_refused(user: WebUser) -> None:
    other_ws, other_token = user.api.create_workspace(name="Other")
    with sign_in(user.api, other_ws, other_token) as other:
        foreign = csrf_of(other.get(PAGE.format(ws=other_ws)).text)
    assert user.add(name="x", csrf=foreign).status_code == 403
    assert _dest_ids(user.get().text) == []


def test_a_post_from_another_origin_is_refused(user: WebUser) -> None:
    response = user.add(name="x", http_headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    assert _dest_ids(user.get().text) == []
    same = user.add(name="y", http_headers={"Origin": user.api.base_url})
    assert same.status_code == 201


# -- the add form ----------------------------------------------------------------------------


def test_the_services_validation_message_is_shown_next_to_the_field(user: WebUser) -> None:
    # Keyed by the field's id: each kind's URL is a field of its own (f-<kind>-url).
    cases = {
        "webhook-url": ({"url": "https://10.0.0.1/x"}, "url: "),
        "headers": ({"headers": "Authorization: Bearer abc"}, "reserved"),
        "event_types": ({"event_types": "Not A Glob"}, "is not an event-type glob"),
        "name": ({"name": ""}, "name: "),
    }
    for field, (data, expected) in cases.items():
        response = user.post("/destinations", {"name": "SIEM",
                                               "url": "https://siem.example.com/in", **data})
        assert response.status_code == 422, field
        error = re.search(rf'id="f-{field}-error">([^<]+)<', response.text)
        assert error is not None, field
        assert expected in error.group(1), error.group(1)
        assert f'id="f-{field}"' in response.text
        # Only the field in error is marked.
        assert response.text.count('aria-invalid="true"') == 1
    # Refused forms leave nothing behind.
    assert _dest_ids(user.get().text) == []


def test_a_refused_form_keeps_what_was_typed_but_never_header_values_in_errors(
        user: WebUser) -> None:
    response = user.add(name="My SIEM", url="https://10.0.0.1/x",
                        event_types="pro.atmos.billing.*")
    assert response.status_code == 422
    assert 'value="My SIEM"' in response.text
    assert "pro.atmos.billing.*</textarea>" in response.text
    refused = user.add(headers="X-Webhook-Id: topsecretvalue")
    assert refused.status_code == 422
    error = re.search(r'id="f-headers-error">([^<]+)<', refused.text)
    assert error is not None
    assert "topsecretvalue" not in error.group(1)


def test_create_shows_the_secret_once_and_the_table_shows_it_active(user: WebUser) -> None:
    response = user.add(name="Splunk", event_types="pro.atmos.auth.*\npro.atmos.billing.*",
                        headers="X-Splunk-Token: tok123\n", description="prod")
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    secrets = _SECRET.findall(response.text)
    assert len(set(secrets)) == 1
    secret = secrets[0]
    assert "shown this once" in response.text

    page = user.get()
    assert secret not in page.text
    assert "tok123" not in page.text
    [dest] = _dest_ids(page.text)
    row = page.text.split(f'id="dest-{dest}"', 1)[1].split("</tr>", 1)[0]
    assert "Splunk" in row
    assert "No deliveries yet" in row
    assert ">Active<" in row
    assert 'aria-live="polite"' in row
    detail = user.get(f"/destinations/{dest}")
    assert detail.status_code == 200
    assert secret not in detail.text
    assert "tok123" not in detail.text
    assert "X-Splunk-Token" in detail.text
    assert "pro.atmos.billing.*" in detail.text
    assert "No deliveries in the last day." in detail.text
    assert user.api.destination_row(dest) is not None


def test_rotate_shows_a_new_secret_once(user: WebUser) -> None:
    created = user.add()
    first = _SECRET.findall(created.text)[0]
    [dest] = _dest_ids(user.get().text)
    rotated = user.post(f"/destinations/{dest}/rotate-secret")
    assert rotated.status_code == 200
    assert rotated.headers["cache-control"] == "no-store"
    [second] = set(_SECRET.findall(rotated.text))
    assert second != first
    assert "24 hours" in rotated.text
    for path in ("", f"/destinations/{dest}"):
        assert second not in user.get(path).text


def test_disable_enable_and_delete_redirect_with_a_message(user: WebUser) -> None:
    user.add(name="Toggle")
    [dest] = _dest_ids(user.get().text)

    disabled = user.post(f"/destinations/{dest}/disable")
    assert disabled.status_code == 303
    assert disabled.headers["location"] == user.page
    page = user.get()
    assert "Toggle disabled." in page.text
    assert ">Disabled<" in page.text
    assert "(manual)" in page.text
    assert "Toggle disabled." not in user.get().text  # a message is shown once

    assert user.post(f"/destinations/{dest}/enable").status_code == 303
    assert ">Active<" in user.get().text

    confirm = user.get(f"/destinations/{dest}/delete")
    assert confirm.status_code == 200
    assert "Delete Toggle?" in confirm.text
    assert user.api.destination_row(dest) is not None  # asking is not deleting
    deleted = user.post(f"/destinations/{dest}/delete", csrf=csrf_of(confirm.text))
    assert deleted.status_code == 303
    assert "Toggle deleted." in user.get().text
    assert user.api.destination_row(dest) is None


def test_pages_forbid_framing_and_inline_scripts(user: WebUser) -> None:
    page = user.get()
    policy = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy
    assert "script-src 'self'" in policy
    assert "<script>" not in page.text
    assert user.http.get("/static/web/web.js").status_code == 200
    assert user.http.get("/static/web/web.css").status_code == 200


def test_the_stream_pushes_each_destinations_status(user: WebUser) -> None:
    user.add(name="Live")
    [dest] = _dest_ids(user.get().text)
    with user.http.stream("GET", user.page + "/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        data = next(line for line in response.iter_lines() if line.startswith("data: "))
    assert json.loads(data.removeprefix("data: ")) == {"destinations": [
        {"id": dest, "delivery": "No deliveries yet", "failed": False, "badge": "Active",
         "reason": None}]}


# -- API tokens --------------------------------------------------------------------------------

_TOKEN = re.compile(r"art_[A-Za-z0-9_-]{43}")


def _token_ids(html: str) -> list[str]:
    return re.findall(r'<tr id="token-(tok_[a-z0-9]+)"', html)


def test_the_page_lists_creates_and_revokes_tokens(user: WebUser) -> None:
    page = user.get().text
    assert "API tokens" in page
    [initial] = _token_ids(page)
    assert user.token[:12] in page
    assert user.token not in page

    created = user.post("/tokens", {"token_name": "CI"})
    assert created.status_code == 201
    assert created.headers["cache-control"] == "no-store"
    [token] = _TOKEN.findall(created.text)
    api = f"/v1/workspaces/{user.ws}/destinations"
    assert user.api.call("GET", api, token).status_code == 200

    page = user.get().text
    assert token not in page
    assert token[:12] in page
    [_, new] = _token_ids(page)
    assert _token_ids(page) == [initial, new]
    assert user.post(f"/tokens/{new}/revoke", csrf="0" * 64).status_code == 403
    assert user.api.call("GET", api, token).status_code == 200

    revoked = user.post(f"/tokens/{new}/revoke")
    assert revoked.status_code == 303
    assert "Token CI revoked." in user.get().text
    assert user.api.call("GET", api, token).status_code == 401
    assert _token_ids(user.get().text) == [initial]


def test_the_page_never_revokes_the_last_token(user: WebUser) -> None:
    [only] = _token_ids(user.get().text)
    refused = user.post(f"/tokens/{only}/revoke")
    assert refused.status_code == 303
    assert "last token" in user.get().text
    assert _token_ids(user.get().text) == [only]


def test_revoking_the_sessions_own_token_signs_the_page_out(user: WebUser) -> None:
    [own] = _token_ids(user.get().text)
    assert user.post("/tokens", {"token_name": "spare"}).status_code == 201
    done = user.post(f"/tokens/{own}/revoke")
    assert done.status_code == 303
    assert done.headers["location"] == user.page + "/login"
    assert user.get().status_code == 303


def test_a_bad_token_name_is_refused_with_a_message(user: WebUser) -> None:
    refused = user.post("/tokens", {"token_name": "  "})
    assert refused.status_code == 303
    assert "The token was not created" in user.get().text
    assert len(_token_ids(user.get().text)) == 1


# -- kinds -------------------------------------------------------------------------------------
# A kind registered only for these tests: the page must offer it, with its own fields,
# without knowing it (the forms are made from the registry).


class LedgerOptions(KindOptions):
    index: str
    mode: Literal["fast", "safe"] = "safe"
    gzip: bool = False


class Ledger(Kind):
    name: ClassVar[str] = "ledger"
    label: ClassVar[str] = "Ledger SIEM"
    Options: ClassVar[type[KindOptions]] = LedgerOptions
    credentials: ClassVar[Credentials] = Credentials(("token",), (frozenset({"token"}),))

    def body(self, batch: Batch, target: Target, events: Sequence[int]) -> bytes:
        return batch.part(events)

    def read(self, reply: Reply, request: Request) -> Verdict:
        ok = reply.status is not None and 200 <= reply.status < 300
        return Verdict("delivered") if ok else Verdict("retry", reply.error)


TOKEN_VALUE = "ledger-token-value-0123456789"


@pytest.fixture
def ledger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(KINDS, "ledger", Ledger())


def _ledger_form(**fields: str) -> dict[str, str]:
    return {"name": "Books", "kind": "ledger", "ledger.url": "https://siem.example.com/",
            "ledger.options.index": "main", "ledger.options.mode": "fast",
            "ledger.options.gzip": "true", "ledger.credentials.token": TOKEN_VALUE,
            # Without the script every kind's fields are sent: only the selected kind's count.
            "webhook.url": "https://10.0.0.1/ignored", "webhook.options.gzip": "true",
            **fields}


def _row_of(html: str, dest: str) -> str:
    return html.split(f'id="dest-{dest}"', 1)[1].split("</tr>", 1)[0]


@pytest.mark.usefixtures("ledger")
def test_a_destination_of_another_kind_is_added_with_its_own_fields(user: WebUser) -> None:
    page = user.get().text
    assert '<option value="ledger">Ledger SIEM</option>' in page
    assert 'name="ledger.credentials.token" value=""' in page
    added = user.post("/destinations", _ledger_form())
    assert added.status_code == 303  # not signed: no secret page
    listing = user.get().text
    assert "Books added." in listing
    [dest] = _dest_ids(listing)
    row = _row_of(listing, dest)
    assert "Ledger SIEM" in row
    assert "<code>gzip</code> on, <code>index</code> main, <code>mode</code> fast" in row
    assert "credentials set: token" in row
    assert "Rotate secret" not in row
    detail = user.get(f"/destinations/{dest}").text
    assert '<dd id="dest-kind">Ledger SIEM</dd>' in detail
    assert "<code>token</code> (values hidden)" in detail
    # The edit form shows the saved options, never the credential.
    assert 'id="f-ledger-options-index" name="ledger.options.index" value="main"' in detail
    assert '<option value="fast" selected>fast</option>' in detail
    for text in (listing, detail):
        assert TOKEN_VALUE not in text
    saved = user.api.call("GET", f"/v1/workspaces/{user.ws}/destinations/{dest}",
                          user.token).json()
    assert (saved["kind"], saved["options"], saved["credentials_set"]) == (
        "ledger", {"index": "main", "mode": "fast", "gzip": True}, ["token"])
    # Not signed: rotating is refused in words, nothing changes.
    refused = user.post(f"/destinations/{dest}/rotate-secret")
    assert refused.status_code == 303
    assert "not signed" in user.get().text


@pytest.mark.usefixtures("ledger")
def test_a_kinds_validation_error_names_its_field_and_keeps_the_typed_values(
        user: WebUser) -> None:
    cases = {
        "ledger-options-index": ({"ledger.options.index": ""}, "options.index: "),
        "ledger-options-mode": ({"ledger.options.mode": "slow"}, "options.mode: "),
        "ledger-credentials-token": ({"ledger.credentials.token": ""}, "credentials.token: "),
        "ledger-url": ({"ledger.url": "https://10.0.0.1/"}, "url: "),
        "kind": ({"kind": "nope"}, "kind: unknown destination kind"),
    }
    for field, (data, expected) in cases.items():
        response = user.post("/destinations", _ledger_form(**data))
        assert response.status_code == 422, field
        error = re.search(rf'id="f-{field}-error">([^<]+)<', response.text)
        assert error is not None, field
        assert expected in error.group(1), error.group(1)
        assert response.text.count('aria-invalid="true"') == 1
        assert "The destination was not added: " in response.text
        assert 'value="Books"' in response.text  # what was typed is kept...
        assert TOKEN_VALUE not in response.text  # ...but never a credential
    kept = user.post("/destinations", _ledger_form(**{"ledger.credentials.token": ""}))
    assert 'id="f-ledger-options-index" name="ledger.options.index" value="main"' in kept.text
    assert '<option value="ledger" selected>Ledger SIEM</option>' in kept.text
    assert _dest_ids(user.get().text) == []


@pytest.mark.usefixtures("ledger")
def test_the_edit_form_changes_options_and_keeps_what_is_left_empty(user: WebUser) -> None:
    assert user.post("/destinations", _ledger_form()).status_code == 303
    [dest] = _dest_ids(user.get().text)
    api = f"/v1/workspaces/{user.ws}/destinations/{dest}"
    row = user.api.destination_row(dest)
    assert row is not None
    sealed = (row.url_encrypted, row.credentials_encrypted)

    edit = {"name": "Books 2", "kind": "ledger", "ledger.url": "",
            "ledger.options.index": "audit", "ledger.options.mode": "safe",
            "ledger.options.gzip": "false", "ledger.credentials.token": "",
            "event_types": "pro.atmos.auth.*", "description": "d", "headers": ""}
    saved = user.post(f"/destinations/{dest}/edit", edit)
    assert saved.status_code == 303
    assert "Books 2 saved." in user.get().text
    got = user.api.call("GET", api, user.token).json()
    assert got["options"] == {"index": "audit", "mode": "safe", "gzip": False}
    assert got["event_types"] == ["pro.atmos.auth.*"]
    assert got["credentials_set"] == ["token"]
    row = user.api.destination_row(dest)
    assert row is not None
    assert (row.url_encrypted, row.credentials_encrypted) == sealed  # kept as they were

    refused = user.post(f"/destinations/{dest}/edit", {**edit, "ledger.options.index": ""})
    assert refused.status_code == 422
    error = re.search(r'id="f-ledger-options-index-error">([^<]+)<', refused.text)
    assert error is not None
    assert "options.index" in error.group(1)
    assert 'value="Books 2"' in refused.text

    # Another kind: its own URL, and none of the old credentials carried over.
    to_webhook = {**edit, "kind": "webhook", "webhook.url": "https://siem.example.com/hook",
                  "webhook.options.gzip": "true"}
    assert user.post(f"/destinations/{dest}/edit", to_webhook).status_code == 303
    got = user.api.call("GET", api, user.token).json()
    assert (got["kind"], got["options"], got["credentials_set"]) == (
        "webhook", {"gzip": True}, [])
    assert got["url"].startswith("https://siem.example.com")
