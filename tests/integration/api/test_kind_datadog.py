"""``datadog_logs`` destinations through the API: fields, 422s naming the field, the API
key write-only, and test sends through the strict fake intake on loopback.

The fake resolver maps Datadog's intake names to a public address (nothing connects
to them); the app allows 127.0.0.0/8, so that the fake at ``http://127.0.0.1:{port}``
is the operator's choice (``auditrelay.wire.kinds.loopback``). The production rule
(no allowance) is checked on ``shared_api``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from auditrelay.wire.kinds.datadog import SITES
from tests.integration.api.conftest import (
    DB_KINDS,
    ApiServer,
    error_of,
    refused_naming,
    vendor_api,
)
from tests.support.receivers.datadog import DatadogIntake
from tests.support.servers import serve

KEY = "0123456789abcdef0123456789abcdef"
OTHER_KEY = "fedcba9876543210fedcba9876543210"
INTAKE = SITES["datadoghq.eu"]
VENDOR_NAMES = {url.removeprefix("https://"): ["93.184.216.34"] for url in SITES.values()}


@pytest.fixture(scope="module", params=DB_KINDS)
def dd_api(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    with vendor_api(request, tmp_path_factory, "api-dd", VENDOR_NAMES) as server:
        yield server


def _create(api: ApiServer, ws: str, token: str, **body: Any) -> tuple[int, dict[str, Any]]:
    return api.post_destination(ws, token, **{
        "name": "Datadog", "kind": "datadog_logs", "url": INTAKE,
        "credentials": {"api_key": KEY}, **body})


def test_a_datadog_destination_keeps_its_options_and_hides_its_key(dd_api: ApiServer) -> None:
    ws, token = dd_api.create_workspace()
    status, created = _create(dd_api, ws, token, options={"service": "atmos",
                                                          "ddtags": "env:prod"})
    assert status == 201, created
    assert created["kind"] == "datadog_logs"
    assert created["url"] == INTAKE
    assert created["options"] == {"service": "atmos", "ddsource": "auditrelay",
                                  "ddtags": "env:prod", "hostname": None}
    assert created["credentials_set"] == ["api_key"]
    assert created["event_types"] == []  # every event, unless told otherwise
    assert created.get("secret") is None
    path = f"/v1/workspaces/{ws}/destinations/{created['id']}"
    patched = dd_api.call("PATCH", path, token, json={"credentials": {"api_key": OTHER_KEY}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["credentials_set"] == ["api_key"]
    read = dd_api.call("GET", path, token)
    assert read.json()["url"] == INTAKE
    dd_api.assert_never_shown(KEY, OTHER_KEY)


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"url": "https://siem.example.com"}, "url", "https://http-intake.logs.datadoghq.com"),
    ({"url": INTAKE + "/api/v2/logs"}, "url", "no path"),
    ({"url": "https://http-intake.logs.datadoghq.eu:8443"}, "url", "Datadog site"),
    ({"credentials": {}}, "credentials.api_key", "api_key"),
    ({"credentials": {"api_key": KEY, "token": KEY}}, "credentials.token", "api_key"),
    ({"options": {"site": "datadoghq.eu"}}, "options.site", "ddsource"),
    ({"options": {"ddtags": "env: prod"}}, "options.ddtags", ""),
    ({"options": {"gzip": False}}, "options.gzip", ""),
])
def test_invalid_fields_are_refused_naming_the_field(dd_api: ApiServer, body: dict[str, Any],
                                                     field: str, words: str) -> None:
    ws, token = dd_api.create_workspace()
    message = refused_naming(_create(dd_api, ws, token, **body), field)
    assert words in message
    assert KEY not in message


def test_without_the_operators_allowance_a_loopback_intake_is_refused(
        shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    response = shared_api.call("POST", f"/v1/workspaces/{ws}/destinations", token, json={
        "name": "Datadog", "kind": "datadog_logs", "url": "http://127.0.0.1:8080",
        "credentials": {"api_key": KEY}})
    assert response.status_code == 422
    assert error_of(response)["message"].startswith("url:")


def test_a_test_send_reports_datadogs_verdict_in_words(dd_api: ApiServer) -> None:
    intake = DatadogIntake(KEY)
    with serve(intake) as base:
        ws, token = dd_api.create_workspace()
        status, created = _create(dd_api, ws, token, url=base)
        assert status == 201, created

        sent = dd_api.send_test(ws, token, created["id"])
        assert sent["delivered"] is True, sent
        assert (sent["status_code"], sent["message"]) == (202, "Datadog accepted the log")
        requests, logs = intake.received()
        assert [r.path for r in requests] == ["/api/v2/logs"]
        assert requests[0].headers["content-encoding"] == "gzip"
        assert requests[0].headers["x-webhook-id"].startswith("msg_")
        [log] = logs
        assert log["ddsource"] == "auditrelay"
        assert log["audit"]["type"].endswith(".webhook.test_sent")
        assert log["audit"]["workspaceid"] == ws

        intake.api_key = OTHER_KEY  # the key was revoked in Datadog
        # Another destination: test sends to one destination are rate limited.
        status, second = _create(dd_api, ws, token, url=base)
        assert status == 201, second
        refused = dd_api.send_test(ws, token, second["id"])
        assert refused["delivered"] is False
        assert refused["status_code"] == 403
        assert refused["message"].startswith("API key rejected")
        assert refused["error"] == refused["message"]
    dd_api.assert_never_shown(KEY)
