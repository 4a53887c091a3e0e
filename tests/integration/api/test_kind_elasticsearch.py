"""``elasticsearch`` destinations through the API: their fields, 422s naming the field,
credentials write-only, and test sends through the strict fake ``_bulk`` receiver
(HTTPS, trustme certificate for ``RECEIVER_HOST``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trustme

from tests.integration.api.conftest import RECEIVER_HOST, ApiServer, error_of
from tests.support.receivers.elasticsearch import FakeElasticsearch
from tests.support.servers import Server

URL = "https://siem.example.com:9200"
API_KEY = "c29tZWlkOnNla3JpdC1hcGkta2V5"  # base64 of someid:sekrit-api-key
PASSWORD = "sekrit-password-1"


def _create(api: ApiServer, ws: str, token: str, **body: Any) -> tuple[int, dict[str, Any]]:
    payload = {"name": "ES", "url": URL, "kind": "elasticsearch",
               "options": {"index": "audit"}, "credentials": {"api_key": API_KEY}, **body}
    response = api.call("POST", f"/v1/workspaces/{ws}/destinations", token, json=payload)
    return response.status_code, response.json()


def _no_secret_in_any_response(api: ApiServer) -> None:
    for response in api.responses:
        for secret in (API_KEY, PASSWORD, "sekrit"):
            assert secret not in response.text, (response.request.url, response.text)


def test_an_elasticsearch_destination_shows_its_options_and_credential_names_only(
        shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    status, created = _create(shared_api, ws, token, url=URL + "/")
    assert status == 201, created
    assert created["kind"] == "elasticsearch"
    assert created["options"] == {"index": "audit"}
    assert created["credentials_set"] == ["api_key"]
    path = f"/v1/workspaces/{ws}/destinations/{created['id']}"
    read = shared_api.call("GET", path, token).json()
    assert (read["kind"], read["options"], read["credentials_set"]) == (
        "elasticsearch", {"index": "audit"}, ["api_key"])
    listed = shared_api.call("GET", f"/v1/workspaces/{ws}/destinations", token).json()
    assert [item["credentials_set"] for item in listed["items"]] == [["api_key"]]
    # PATCH replaces the credentials whole: from an API key to a user.
    patched = shared_api.call("PATCH", path, token, json={
        "credentials": {"username": "auditrelay", "password": PASSWORD}})
    assert patched.status_code == 200, patched.text
    assert patched.json()["credentials_set"] == ["password", "username"]
    renamed = shared_api.call("PATCH", path, token, json={"options": {"index": "logs-audit-x"}})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["options"] == {"index": "logs-audit-x"}
    _no_secret_in_any_response(shared_api)


@pytest.mark.parametrize(("body", "field"), [
    ({"options": {}}, "options.index"),
    ({"options": {"index": "Audit"}}, "options.index"),
    ({"options": {"index": "audit logs"}}, "options.index"),
    ({"options": {"index": "_audit"}}, "options.index"),
    ({"options": {"index": "a,b"}}, "options.index"),
    ({"options": {"index": ".."}}, "options.index"),
    ({"options": {"index": "a" * 256}}, "options.index"),
    ({"options": {"index": "audit", "gzip": True}}, "options.gzip"),
    ({"credentials": {}}, "credentials.api_key"),
    ({"credentials": {"username": "u"}}, "credentials.password"),
    ({"credentials": {"password": PASSWORD}}, "credentials.username"),
    ({"credentials": {"api_key": API_KEY, "username": "u", "password": PASSWORD}},
     "credentials.api_key"),
    ({"credentials": {"token": PASSWORD}}, "credentials.token"),
    ({"url": URL + "/_bulk"}, "url"),
    ({"url": URL + "/?pretty=true"}, "url"),
    ({"url": "http://siem.example.com:9200"}, "url"),
])
def test_fields_elasticsearch_refuses_are_422_naming_the_field(
        shared_api: ApiServer, body: dict[str, Any], field: str) -> None:
    ws, token = shared_api.create_workspace()
    status, answer = _create(shared_api, ws, token, **body)
    assert status == 422, answer
    message = answer["error"]["message"]
    assert message.startswith(f"{field}:"), message
    listed = shared_api.call("GET", f"/v1/workspaces/{ws}/destinations", token)
    assert listed.json()["items"] == []
    _no_secret_in_any_response(shared_api)


def test_a_refused_patch_leaves_the_destination_unchanged(shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    _, created = _create(shared_api, ws, token)
    path = f"/v1/workspaces/{ws}/destinations/{created['id']}"
    refused = shared_api.call("PATCH", path, token, json={"options": {"index": "Nope"},
                                                          "name": "renamed"})
    assert refused.status_code == 422
    assert error_of(refused)["message"].startswith("options.index: Elasticsearch refuses")
    after = shared_api.call("GET", path, token).json()
    assert (after["name"], after["options"]) == ("ES", {"index": "audit"})


# -- test sends through the fake --------------------------------------------------------------


@pytest.fixture
def fake_es(ca: trustme.CA) -> Iterator[tuple[FakeElasticsearch, str]]:
    fake = FakeElasticsearch(username="auditrelay", password=PASSWORD)
    with Server(fake, cert=ca.issue_cert(RECEIVER_HOST)) as server:
        yield fake, f"https://{RECEIVER_HOST}:{server.port}"


def _test(api: ApiServer, ws: str, token: str, dest: str) -> dict[str, Any]:
    response = api.call("POST", f"/v1/workspaces/{ws}/destinations/{dest}/test", token)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def test_a_test_send_is_one_document_in_the_index_and_says_so(
        delivering_api: ApiServer, fake_es: tuple[FakeElasticsearch, str]) -> None:
    fake, url = fake_es
    api = delivering_api
    ws, token = api.create_workspace()
    _, dest = _create(api, ws, token, url=url,
                      credentials={"username": "auditrelay", "password": PASSWORD})
    result = _test(api, ws, token, dest["id"])
    assert (result["delivered"], result["status_code"], result["error"]) == (True, 200, None)
    assert result["message"] == "Elasticsearch accepted the event"
    [document] = fake.documents("audit").values()
    assert document["type"] == "pro.atmos.webhook.test_sent"
    assert document["data"]["target"] == {"type": "destination", "id": dest["id"]}
    assert "@timestamp" in document
    _no_secret_in_any_response(api)


def test_a_test_send_with_wrong_credentials_says_elasticsearch_rejected_them(
        delivering_api: ApiServer, fake_es: tuple[FakeElasticsearch, str]) -> None:
    fake, url = fake_es
    api = delivering_api
    ws, token = api.create_workspace()
    _, dest = _create(api, ws, token, url=url)  # an API key the fake does not know
    result = _test(api, ws, token, dest["id"])
    assert (result["delivered"], result["status_code"]) == (False, 401)
    assert result["message"] == "Elasticsearch rejected the credentials (HTTP 401)"
    fake.status_all = 503  # (test sends are rate-limited per destination: another one)
    _, other = _create(api, ws, token, url=url, name="ES 2",
                       credentials={"username": "auditrelay", "password": PASSWORD})
    down = _test(api, ws, token, other["id"])
    assert down["message"] == ("Elasticsearch did not handle the request (HTTP 503 "
                               "master_not_discovered_exception)")
    assert fake.count("audit") == 0
    _no_secret_in_any_response(api)
