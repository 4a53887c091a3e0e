"""``sumo_logic`` destinations through the API: the URL is the credential (masked in every
read), options, 422s naming the field, test sends through the strict fake source."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest
import trustme

from tests.integration.api.conftest import ApiServer, at_receiver_host, refused_naming
from tests.support.receivers.sumo_logic import SOURCE_PATH, SumoLogicFake

CODE = "ZaVnC4dhaV3uTKlf0Q5Rz1EXAMPLEcodeSECRET=="
URL = f"https://siem.example.com/receiver/v1/http/{CODE}"


def _create(api: ApiServer, ws: str, token: str, **body: Any) -> tuple[int, dict[str, Any]]:
    return api.post_destination(ws, token, **{"name": "Sumo", "kind": "sumo_logic", "url": URL,
                                              **body})


def test_a_sumo_destination_keeps_its_options_and_masks_its_url(
        shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    status, created = _create(shared_api, ws, token,
                              options={"category": "prod/atmos/audit", "source_host": "eu-1"})
    assert status == 201, created
    assert created["kind"] == "sumo_logic"
    assert created["options"] == {"category": "prod/atmos/audit", "source_name": None,
                                  "source_host": "eu-1"}
    assert created["credentials_set"] == []
    assert created["secret"] is None
    assert created["url"] == "https://siem.example.com/\u2026"
    path = f"/v1/workspaces/{ws}/destinations/{created['id']}"
    new_code = "ZaVnREGENERATEDcode0000000000"
    patched = shared_api.call("PATCH", path, token,
                              json={"url": f"https://siem.example.com/receiver/v1/http/{new_code}"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["url"] == "https://siem.example.com/\u2026"
    shared_api.call("GET", path, token)
    shared_api.call("GET", f"/v1/workspaces/{ws}/destinations", token)
    shared_api.assert_never_shown(CODE, new_code)


@pytest.mark.parametrize(("body", "field"), [
    ({"url": "https://siem.example.com/"}, "url"),
    ({"url": f"https://siem.example.com/receiver/v1/http/{CODE}?x=1"}, "url"),
    ({"url": f"https://siem.example.com/somewhere/{CODE}"}, "url"),
    ({"options": {"gzip": False}}, "options.gzip"),
    ({"options": {"category": "a\nb"}}, "options.category"),
    ({"credentials": {"token": "x"}}, "credentials.token"),
])
def test_bad_fields_are_refused_naming_the_field(shared_api: ApiServer,
                                                 body: dict[str, Any], field: str) -> None:
    ws, token = shared_api.create_workspace()
    refused_naming(_create(shared_api, ws, token, **body), field)
    shared_api.assert_never_shown(CODE)


# -- test sends through the fake -----------------------------------------------------------


@pytest.fixture
def sumo(ca: trustme.CA) -> Iterator[tuple[SumoLogicFake, str, str]]:
    fake = SumoLogicFake()
    code = fake.new_source()
    with at_receiver_host(fake, ca) as base:
        yield fake, code, f"{base}{SOURCE_PATH}{code}"


def test_a_test_send_is_one_gzipped_line_with_the_metadata_headers(
        delivering_api: ApiServer, sumo: tuple[SumoLogicFake, str, str]) -> None:
    fake, code, url = sumo
    ws, token = delivering_api.create_workspace()
    _, created = _create(delivering_api, ws, token, url=url,
                         options={"category": "prod/audit", "source_name": "atmos"})
    result = delivering_api.send_test(ws, token, created["id"])
    assert result["message"] == "Sumo Logic accepted the event"
    assert result["delivered"] is True
    [message] = fake.messages
    event = json.loads(message.line)
    assert event["type"].endswith(".webhook.test_sent")
    assert event["workspaceid"] == ws
    assert (message.category, message.name, message.host) == ("prod/audit", "atmos", None)
    [exchange] = fake.snapshot()
    assert exchange.headers["content-encoding"] == "gzip"
    assert gzip.decompress(exchange.body) == message.line + b"\n"
    delivering_api.assert_never_shown(code)


def test_a_test_send_to_a_deleted_source_says_so(
        delivering_api: ApiServer, sumo: tuple[SumoLogicFake, str, str]) -> None:
    fake, code, url = sumo
    fake.delete(code)
    ws, token = delivering_api.create_workspace()
    _, created = _create(delivering_api, ws, token, url=url)
    result = delivering_api.send_test(ws, token, created["id"])
    assert result["delivered"] is False
    assert result["status_code"] == 401
    assert "Sumo Logic does not know this HTTP source URL" in result["message"]
    assert fake.messages == []
    delivering_api.assert_never_shown(code)
