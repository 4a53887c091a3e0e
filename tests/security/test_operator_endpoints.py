"""What the API's port shows besides the API: the OpenAPI pages and ``/metrics`` (issue #11).

An API whose port faces tenants need not show them its metrics nor its
interactive docs. ``AUDITRELAY_API_DOCS=false`` answers ``/openapi.json``, ``/docs``
and ``/redoc`` 404; ``AUDITRELAY_API_METRICS_PORT`` moves ``/metrics`` to a listener
of its own (``AUDITRELAY_API_METRICS_ADDRESS``, 127.0.0.1 by default) that starts
and stops with the API, and ``0`` serves it nowhere. The defaults keep both where
they were (docs/api.md, docs/metrics.md): the default API binds to 127.0.0.1, and
``auditrelay api`` warns when it binds elsewhere with metrics on its port.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from auditrelay.schemas.settings import Settings
from tests.integration.api.conftest import ApiServer, MakeApi, error_of, running_api
from tests.support.servers import free_port

DOC_PATHS = ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect")


def _series(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


def _scrape(url: str) -> httpx.Response:
    response = httpx.get(url, timeout=10.0)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response


def _not_found(api: ApiServer, path: str) -> None:
    response = api.call("GET", path)
    assert response.status_code == 404, (path, response.text)
    assert error_of(response)["code"] == "not_found"


def test_the_defaults_serve_docs_and_metrics_on_the_api_port(make_api: MakeApi) -> None:
    assert Settings.model_fields["api_docs"].default is True
    assert Settings.model_fields["api_metrics_port"].default is None
    assert Settings.model_fields["api_metrics_address"].default == "127.0.0.1"
    api = make_api()
    spec = api.call("GET", "/openapi.json")
    assert spec.status_code == 200, spec.text
    assert "/v1/workspaces/{ws}/events" in spec.json()["paths"]
    for page in ("/docs", "/redoc"):
        response = api.call("GET", page)
        assert response.status_code == 200, page
        assert response.headers["content-type"].startswith("text/html")
    assert "auditrelay_api_requests" in _series(_scrape(f"{api.base_url}/metrics").text)


def test_the_documented_error_answers_name_their_codes(make_api: MakeApi) -> None:
    responses = make_api().call("GET", "/openapi.json").json()["paths"][
        "/v1/workspaces/{ws}/events"]["get"]["responses"]
    for status, code in (("400", "invalid_cursor"), ("409", "quota_exceeded"),
                         ("413", "payload_too_large"), ("422", "invalid_request"),
                         ("429", "rate_limited")):
        assert code in responses[status]["description"], (status, responses[status])
        assert responses[status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorOut"}


def test_docs_off_answers_every_docs_path_404(make_api: MakeApi) -> None:
    api = make_api(settings={"api_docs": False})
    for path in DOC_PATHS:
        _not_found(api, path)
    ws, token = api.create_workspace()  # the API itself is unchanged
    assert api.call("GET", f"/v1/workspaces/{ws}/events", token).status_code == 200


def test_metrics_on_a_port_of_their_own_leave_the_api_port(make_api: MakeApi) -> None:
    port = free_port()
    api = make_api(settings={"api_metrics_port": port})
    assert api.settings.api_metrics_address == "127.0.0.1"
    assert api.call("GET", "/healthz").status_code == 200
    _not_found(api, "/metrics")
    text = _scrape(f"http://127.0.0.1:{port}/metrics").text
    assert {"auditrelay_api_requests", "auditrelay_outbox_backlog"} <= _series(text)
    # The API port's requests are counted there, its 404 for /metrics among them.
    assert 'route="/healthz"' in text
    assert 'route="unmatched",status="404"' in text
    assert httpx.get(f"http://127.0.0.1:{port}/v1/workspaces").status_code == 404


def test_the_metrics_listener_stops_with_the_api(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    with running_api(database_url, tmp_path, settings={"api_metrics_port": port}) as api:
        _scrape(f"http://127.0.0.1:{port}/metrics")
        assert api.call("GET", "/healthz").status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5.0)
    with socket.create_server(("127.0.0.1", port)):
        pass  # and the port is free again


def test_a_metrics_port_taken_is_logged_and_the_api_serves(
        make_api: MakeApi, caplog: pytest.LogCaptureFixture) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with caplog.at_level(logging.ERROR, logger="auditrelay.api.observability"):
            api = make_api(settings={"api_metrics_port": port})
        assert api.call("GET", "/healthz").status_code == 200
        _not_found(api, "/metrics")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"127.0.0.1:{port}" in m and "AUDITRELAY_API_METRICS_PORT" in m
               for m in errors), errors


def test_metrics_port_zero_serves_metrics_nowhere(make_api: MakeApi) -> None:
    api = make_api(settings={"api_metrics_port": 0})
    assert api.call("GET", "/healthz").status_code == 200
    _not_found(api, "/metrics")
