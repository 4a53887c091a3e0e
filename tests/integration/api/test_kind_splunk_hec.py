"""``splunk_hec`` destinations through the API: fields, 422s naming the field, the token
write-only, and test sends through the strict fake HEC (over HTTPS on loopback)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import trustme

from tests.integration.api.conftest import ApiServer, at_receiver_host, error_of, refused_naming
from tests.support.receivers.splunk_hec import SplunkHecFake

TOKEN = "6c7e0c36-6b8a-4e59-9b8a-1f0b7d3c2a11"
BASE = "https://siem.example.com:8088"


def _create(api: ApiServer, ws: str, token: str, **body: Any) -> tuple[int, dict[str, Any]]:
    return api.post_destination(ws, token, **{
        "name": "Splunk", "kind": "splunk_hec", "url": BASE, "credentials": {"token": TOKEN},
        **body})


def test_a_splunk_destination_keeps_its_fields_and_never_shows_the_token(
        shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    status, created = _create(shared_api, ws, token, options={"index": "audit", "ack": True})
    assert status == 201, created
    assert created["kind"] == "splunk_hec"
    assert created["options"] == {"index": "audit", "source": None, "sourcetype": "_json",
                                  "host": None, "gzip": False, "ack": True}
    assert created["credentials_set"] == ["token"]
    assert created["secret"] is None
    assert created["url"] == BASE
    path = f"/v1/workspaces/{ws}/destinations/{created['id']}"
    patched = shared_api.call("PATCH", path, token,
                              json={"credentials": {"token": "a-new-token-0001"}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["credentials_set"] == ["token"]
    listed = shared_api.call("GET", f"/v1/workspaces/{ws}/destinations", token)
    assert [d["kind"] for d in listed.json()["items"]] == ["splunk_hec"]
    rotated = shared_api.call("POST", f"{path}/rotate-secret", token)
    assert rotated.status_code in (409, 422), rotated.text
    assert "credentials" in error_of(rotated)["message"]
    shared_api.assert_never_shown(TOKEN, "a-new-token-0001")


@pytest.mark.parametrize(("body", "field"), [
    ({"url": BASE + "/services/collector/event"}, "url"),
    ({"url": BASE + "/?token=" + TOKEN}, "url"),
    ({"options": {"index": "Main"}}, "options.index"),
    ({"options": {"sourcetype": ""}}, "options.sourcetype"),
    ({"options": {"acks": True}}, "options.acks"),
    ({"credentials": {}}, "credentials.token"),
    ({"credentials": {"token": "has space"}}, "credentials.token"),
    ({"credentials": {"token": TOKEN, "password": "x"}}, "credentials.password"),
])
def test_bad_fields_are_refused_naming_the_field(shared_api: ApiServer,
                                                 body: dict[str, Any], field: str) -> None:
    ws, token = shared_api.create_workspace()
    refused_naming(_create(shared_api, ws, token, **body), field)
    shared_api.assert_never_shown(TOKEN)


def test_a_path_patched_into_the_url_is_refused(shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    _, created = _create(shared_api, ws, token)
    path = f"/v1/workspaces/{ws}/destinations/{created['id']}"
    refused = shared_api.call("PATCH", path, token, json={"url": BASE + "/services"})
    assert refused.status_code == 422
    assert error_of(refused)["message"].startswith("url")


# -- test sends through the fake -----------------------------------------------------------


@pytest.fixture
def hec(ca: trustme.CA) -> Iterator[tuple[SplunkHecFake, str]]:
    fake = SplunkHecFake({TOKEN})
    with at_receiver_host(fake, ca) as url:
        yield fake, url


def test_a_test_send_is_one_hec_event_and_says_splunk_took_it(
        delivering_api: ApiServer, hec: tuple[SplunkHecFake, str]) -> None:
    fake, url = hec
    ws, token = delivering_api.create_workspace()
    _, created = _create(delivering_api, ws, token, url=url,
                         options={"index": "audit", "gzip": True})
    result = delivering_api.send_test(ws, token, created["id"])
    assert result["message"] == "Splunk HEC accepted the event"
    assert result["delivered"] is True
    assert result["status_code"] == 200
    [indexed] = fake.indexed
    assert indexed["event"]["type"].endswith(".webhook.test_sent")
    assert indexed["index"] == "audit"
    assert indexed["fields"]["workspace"] == ws
    [exchange] = fake.snapshot()
    assert exchange.path == "/services/collector/event"
    assert exchange.headers["content-encoding"] == "gzip"
    assert exchange.headers["x-webhook-id"].startswith("msg_")
    delivering_api.assert_never_shown(TOKEN)


def test_a_test_send_with_a_token_splunk_refuses_says_so(
        delivering_api: ApiServer, hec: tuple[SplunkHecFake, str]) -> None:
    fake, url = hec
    fake.tokens.clear()
    ws, token = delivering_api.create_workspace()
    _, created = _create(delivering_api, ws, token, url=url)
    result = delivering_api.send_test(ws, token, created["id"])
    assert result["delivered"] is False
    assert result["status_code"] == 403
    assert result["message"] == "token rejected by Splunk HEC: Invalid token (HTTP 403, code 4)"
    assert fake.indexed == []
    delivering_api.assert_never_shown(TOKEN)


def test_a_test_send_with_ack_waits_for_the_acknowledgement(
        delivering_api: ApiServer, hec: tuple[SplunkHecFake, str]) -> None:
    fake, url = hec
    fake.ack = True
    fake.ack_after = 2
    ws, token = delivering_api.create_workspace()
    _, created = _create(delivering_api, ws, token, url=url, options={"ack": True})
    result = delivering_api.send_test(ws, token, created["id"])
    assert result["message"] == "Splunk HEC accepted the event"
    paths = [e.path for e in fake.snapshot()]
    assert paths == ["/services/collector/event"] + ["/services/collector/ack"] * 3
    channels = {e.headers["x-splunk-request-channel"] for e in fake.snapshot()}
    assert len(channels) == 1
    assert json.loads(fake.snapshot()[1].body) == {"acks": [0]}
