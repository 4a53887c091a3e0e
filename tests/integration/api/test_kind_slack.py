"""``slack`` destinations through the API: the webhook URL as a credential (masked, never
returned), the default filter a person wants, 422s naming the field, and test sends
through the strict fake Slack on loopback.

The fake resolver maps ``hooks.slack.com`` to a public address (nothing connects to
it); the app allows 127.0.0.0/8 so that the fake Slack at ``http://127.0.0.1:{port}``
is the operator's choice (``auditrelay.wire.kinds.loopback``). The production rule
(no allowance) is checked on ``shared_api``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.api.conftest import (
    DB_KINDS,
    ApiServer,
    error_of,
    refused_naming,
    vendor_api,
)
from tests.support.receivers.slack import SlackHooks
from tests.support.servers import serve

HOOK_PATH = "/services/T0001/B0001/s3cr3tPathPart0123456789"
HOOK = "https://hooks.slack.com" + HOOK_PATH
SECRET_PART = "s3cr3tPathPart0123456789"


@pytest.fixture(scope="module", params=DB_KINDS)
def slack_api(request: pytest.FixtureRequest,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with vendor_api(request, tmp_path_factory, "api-slack",
                    {"hooks.slack.com": ["93.184.216.34"]}) as server:
        yield server


def _create(api: ApiServer, ws: str, token: str, **body: Any) -> tuple[int, dict[str, Any]]:
    return api.post_destination(ws, token, **{
        "name": "Slack #security", "kind": "slack", "url": HOOK, **body})


def test_a_slack_destination_masks_its_url_and_filters_for_people(slack_api: ApiServer,
                                                                  ) -> None:
    ws, token = slack_api.create_workspace()
    status, created = _create(slack_api, ws, token)
    assert status == 201, created
    assert created["kind"] == "slack"
    assert created["url"] == "https://hooks.slack.com/\u2026"
    assert created["options"] == {}
    assert created["credentials_set"] == []
    prefix = slack_api.settings.event_type_prefix
    assert created["event_types"] == [f"{prefix}.{category}.*" for category in
                                      ("auth", "permission", "team_member", "billing")]
    path = f"/v1/workspaces/{ws}/destinations/{created['id']}"
    patched = slack_api.call("PATCH", path, token, json={"event_types": [f"{prefix}.*"]})
    assert patched.status_code == 200, patched.text
    assert patched.json()["event_types"] == [f"{prefix}.*"]
    status, everything = _create(slack_api, ws, token, event_types=[])
    assert status == 201
    assert everything["event_types"] == []  # given, so kept: the default is only a default
    slack_api.assert_never_shown(SECRET_PART)


@pytest.mark.parametrize(("body", "field"), [
    ({"url": "https://siem.example.com/services/T1/B1/x"}, "url"),
    ({"url": "https://hooks.slack.com/triggers/T1/1/x"}, "url"),
    ({"url": "https://hooks.slack.com/"}, "url"),
    ({"credentials": {"token": "xoxb-1"}}, "credentials.token"),
    ({"options": {"channel": "#sec"}}, "options.channel"),
])
def test_invalid_fields_are_refused_naming_the_field(slack_api: ApiServer,
                                                     body: dict[str, Any], field: str) -> None:
    ws, token = slack_api.create_workspace()
    message = refused_naming(_create(slack_api, ws, token, **body), field)
    assert "xoxb-1" not in message


def test_without_the_operators_allowance_a_loopback_webhook_is_refused(
        shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    response = shared_api.call("POST", f"/v1/workspaces/{ws}/destinations", token, json={
        "name": "Slack", "kind": "slack", "url": "http://127.0.0.1:8080" + HOOK_PATH})
    assert response.status_code == 422
    assert error_of(response)["message"].startswith("url:")


def test_a_test_send_posts_one_message_and_reports_slacks_verdict(slack_api: ApiServer,
                                                                  ) -> None:
    hooks = SlackHooks(HOOK_PATH, "/services/T0001/B0002/archived")
    with serve(hooks) as base:
        ws, token = slack_api.create_workspace(name="Acme")
        status, created = _create(slack_api, ws, token, url=base + HOOK_PATH)
        assert status == 201, created
        sent = slack_api.send_test(ws, token, created["id"])
        assert sent["delivered"] is True, sent
        assert (sent["status_code"], sent["message"]) == (200, "Slack posted the message")
        [message] = hooks.messages(HOOK_PATH)
        assert message.payload["text"].startswith("1 audit event in <")
        assert message.payload["text"].endswith(f"/workspaces/{ws}|Acme>")
        assert "webhook.test_sent" in message.payload["blocks"][1]["text"]["text"]

        hooks.state("/services/T0001/B0002/archived").answer = (410, "channel_is_archived")
        status, archived = _create(slack_api, ws, token,
                                   url=base + "/services/T0001/B0002/archived")
        assert status == 201, archived
        refused = slack_api.send_test(ws, token, archived["id"])
        assert refused["delivered"] is False
        assert refused["status_code"] == 410
        assert refused["message"] == \
            "Slack says the webhook's channel is archived (channel_is_archived)"
    slack_api.assert_never_shown(SECRET_PART)
