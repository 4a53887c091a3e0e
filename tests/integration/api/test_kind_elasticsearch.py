"""``elasticsearch`` destinations through the API: their fields, 422s naming the field,
credentials write-only, and test sends through the strict fake ``_bulk`` receiver
(HTTPS, trustme certificate for ``RECEIVER_HOST``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trustme

from tests.integration.api.conftest import ApiServer, at_receiver_host, error_of, refused_naming
from tests.support.receivers.elasticsearch import FakeElasticsearch

URL = "https://siem.example.com:9200"
API_KEY = "c29tZWlkOnNla3JpdC1hcGkta2V5"  # base64 of someid:sekrit-api-key
PASSWORD = "sekrit-password-1"
SECRETS = (API_KEY, PASSWORD, "sekrit")


def _create(api: ApiServer, ws: str, token: str, **body: Any) -> tuple[int, dict[str, Any]]:
    return api.post_destination(ws, token, **{
        "name": "ES", "url": URL, "kind": "elasticsearch", "options": {"index": "audit"},
        "credentials": {"api_key": API_KEY}, **body})


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
    shared_api.assert_never_shown(*SECRETS)


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
    refused_naming(_create(shared_api, ws, token, **body), field)
    listed = shared_api.call("GET", f"/v1/workspaces/{ws}/destinations", token)
    assert listed.json()["items"] == []
    shared_api.assert_never_shown(*SECRETS)


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
    with at_receiver_host(fake, ca) as url:
        yield fake, url


def test_a_test_send_is_one_document_in_the_index_and_says_so(
        delivering_api: ApiServer, fake_es: tuple[FakeElasticsearch, str]) -> None:
    fake, url = fake_es
    api = delivering_api
    ws, token = api.create_workspace()
    _, dest = _create(api, ws, token, url=url,
                      credentials={"username": "auditrelay", "password": PASSWORD})
    result = api.send_test(ws, token, dest["id"])
    assert (result["delivered"], result["status_code"], result["error"]) == (True, 200, None)
    assert result["message"] == "Elasticsearch accepted the event"
    [document] = fake.documents("audit").values()
    assert document["type"] == "pro.atmos.webhook.test_sent"
    assert document["data"]["target"] == {"type": "destination", "id": dest["id"]}
    assert "@timestamp" in document
    api.assert_never_shown(*SECRETS)


def test_a_test_send_with_wrong_credentials_says_elasticsearch_rejected_them(
        delivering_api: ApiServer, fake_es: tuple[FakeElasticsearch, str]) -> None:
    fake, url = fake_es
    api = delivering_api
    ws, token = api.create_workspace()
    _, dest = _create(api, ws, token, url=url)  # an API key the fake does not know
    result = api.send_test(ws, token, dest["id"])
    assert (result["delivered"], result["status_code"]) == (False, 401)
    assert result["message"] == "Elasticsearch rejected the credentials (HTTP 401)"
    fake.status_all = 503  # (test sends are rate-limited per destination: another one)
    _, other = _create(api, ws, token, url=url, name="ES 2",
                       credentials={"username": "auditrelay", "password": PASSWORD})
    down = api.send_test(ws, token, other["id"])
    assert down["message"] == ("Elasticsearch did not handle the request (HTTP 503 "
                               "master_not_discovered_exception)")
    assert fake.count("audit") == 0
    api.assert_never_shown(*SECRETS)
