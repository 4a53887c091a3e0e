"""Destination ports (issue #11.4): 443 and 1024-65535 unless the operator widens them.

A destination on port 22, 25 or 6379 of any host made the API and the worker speak HTTP
to SSH, SMTP or Redis. Ports outside the allowed ones are now refused with 422 naming
the port, when a destination is created or changed, and again where a delivery
connects: a config record can carry a URL stored before the rule. The default keeps
the unprivileged ports (SIEMs listen on 8088, 8443, 9200...), so 6379 stays allowed
unless the operator narrows the list, which the setting can do as well as widen it.
"""

from __future__ import annotations

import asyncio

import pytest

from auditrelay.schemas.errors import InvalidInputError
from auditrelay.schemas.settings import Settings
from auditrelay.wire.client import DeliveryClient, DeliveryConfig
from auditrelay.wire.ssrf import validate_destination_url
from tests.integration.api.conftest import LOOPBACK, ApiServer, MakeApi, error_of
from tests.unit.wire.test_client import SpySockets
from tests.unit.wire.test_ssrf import FakeResolver, make_resolver

REFUSED_PORTS = [22, 25, 80, 1, 1023]


@pytest.mark.parametrize("port", REFUSED_PORTS)
def test_low_ports_are_refused_naming_the_port(port: int) -> None:
    with pytest.raises(InvalidInputError) as refused:
        validate_destination_url(f"https://siem.example.com:{port}/in", resolver=make_resolver())
    assert f"port {port} is not allowed" in str(refused.value)
    assert "443, 1024-65535" in str(refused.value)
    assert refused.value.field == "url"


@pytest.mark.parametrize(("url", "port"), [("https://siem.example.com/in", 443),
                                          ("https://siem.example.com:443/in", 443),
                                          ("https://siem.example.com:8443/in", 8443),
                                          ("https://siem.example.com:1024/in", 1024),
                                          ("https://siem.example.com:65535/in", 65535)])
def test_https_and_unprivileged_ports_are_accepted(url: str, port: int) -> None:
    assert validate_destination_url(url, resolver=make_resolver()).port == port


def test_the_setting_widens_the_ports() -> None:
    ports = Settings(allowed_destination_ports="22, 443,1024-65535").allowed_destination_ports  # type: ignore[arg-type]
    assert ports == ((22, 22), (443, 443), (1024, 65535))
    validated = validate_destination_url("https://siem.example.com:22/", resolver=make_resolver(),
                                          allowed_ports=ports)
    assert validated.port == 22
    with pytest.raises(InvalidInputError, match="port 25 is not allowed"):
        validate_destination_url("https://siem.example.com:25/", resolver=make_resolver(),
                                 allowed_ports=ports)


def test_the_setting_narrows_the_ports() -> None:
    ports = Settings(allowed_destination_ports="443,8088").allowed_destination_ports  # type: ignore[arg-type]
    assert validate_destination_url("https://siem.example.com:8088/", resolver=make_resolver(),
                                    allowed_ports=ports).port == 8088
    with pytest.raises(InvalidInputError, match="port 6379 is not allowed"):
        validate_destination_url("https://siem.example.com:6379/", resolver=make_resolver(),
                                 allowed_ports=ports)


@pytest.mark.parametrize("value", ["", "0", "70000", "80-20", "http", "22;25"])
def test_a_bad_port_setting_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="allowed_destination_ports"):
        Settings(allowed_destination_ports=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("port", [22, 25, 80])
def test_the_api_refuses_a_low_port_with_422(shared_api: ApiServer, port: int) -> None:
    ws, token = shared_api.create_workspace()
    path = f"/v1/workspaces/{ws}/destinations"
    url = f"https://siem.example.com:{port}/in"
    response = shared_api.call("POST", path, token, json={"name": "SIEM", "url": url})
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["code"] == "invalid_request"
    assert f"port {port} is not allowed" in error["message"]
    dest = shared_api.create_destination(ws, token, url="https://siem.example.com:8443/in")
    response = shared_api.call("PATCH", f"{path}/{dest['id']}", token, json={"url": url})
    assert response.status_code == 422, response.text
    assert f"port {port} is not allowed" in error_of(response)["message"]
    listed = shared_api.call("GET", path, token).json()["items"]
    assert [d["id"] for d in listed] == [dest["id"]]  # nothing else was written


def test_the_api_accepts_the_ports_the_operator_allows(make_api: MakeApi) -> None:
    api = make_api(settings={"allowed_destination_ports": "25,443,1024-65535"})
    ws, token = api.create_workspace()
    assert api.create_destination(ws, token, url="https://siem.example.com:25/in")["id"]
    response = api.call("POST", f"/v1/workspaces/{ws}/destinations", token,
                        json={"name": "SIEM", "url": "https://siem.example.com:22/in"})
    assert response.status_code == 422
    assert "port 22 is not allowed; destinations may use ports 25, 443, 1024-65535" \
        in error_of(response)["message"]


@pytest.mark.parametrize(("port", "allowed"), [(22, "443,1024-65535"), (25, "443,1024-65535"),
                                              (6379, "443,8088")])
def test_a_delivery_to_a_refused_port_is_refused_before_connecting(port: int,
                                                                   allowed: str) -> None:
    """As the worker would deliver a config record carrying such a URL: no connection."""
    spy = SpySockets()
    settings = Settings(allowed_destination_ports=allowed,  # type: ignore[arg-type]
                        allow_private_cidrs=LOOPBACK)

    async def deliver() -> str | None:
        config = DeliveryConfig.from_settings(settings)
        async with DeliveryClient(config, resolver=FakeResolver({"rx.example": ["127.0.0.1"]}),
                                  socket_factory=spy) as client:
            result = await client.post_batch(f"https://rx.example:{port}/in", b"[]", {})
        assert not result.ok
        return result.error

    error = asyncio.run(deliver())
    assert spy.connects == []
    assert error is not None
    assert f"port {port} is not allowed" in error


def test_the_worker_takes_the_ports_from_the_settings() -> None:
    settings = Settings(allowed_destination_ports="22,443")  # type: ignore[arg-type]
    assert DeliveryConfig.from_settings(settings).allowed_ports == ((22, 22), (443, 443))
