"""Ids in a path are validated before any use (issue #11).

The settings page put the path's workspace segment, unescaped, into its cookies'
``Path``: ``x%3B%20Domain%3Dexample.com`` added a ``Domain`` attribute, CR/LF dropped
the connection and a non-Latin-1 character was a 500. Now every route with a ``ws``,
``dest_id`` or ``token_id`` refuses a value that is not a well-formed id
(``auditrelay.schemas.ids``) with a 404 before anything reads it: the JSON error of
the API, the page's own 404 page on the settings page.
"""

from __future__ import annotations

import importlib
import pkgutil

import httpx
import pytest
from fastapi.routing import APIRoute

from auditrelay.api import routes as api_routes
from auditrelay.api import web
from tests.integration.api.conftest import ApiServer, error_of

PAGE = "/workspaces/{ws}/settings/webhooks"
DOMAIN_INJECTION = "x%3B%20Domain%3Dexample.com"

#: Path segments (already percent-encoded, sent as they are) that are no id at all.
MALFORMED = [
    DOMAIN_INJECTION,
    "ws_a%0d%0aSet-Cookie:%20evil=1",
    "ws_a%0d%0a",
    "ws_%C3%A9",
    "%C3%A9",
    "ws_A",
    "ws_" + "a" * 41,
]


def _raw_get(api: ApiServer, path: str) -> httpx.Response:
    # A fresh client: no cookie of another test, and the exact bytes of ``path``.
    with httpx.Client(base_url=api.base_url, timeout=30.0) as client:
        return client.get(path)


def _assert_page_404(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "Not found" in response.text
    assert "set-cookie" not in response.headers


def _assert_api_404(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text
    assert error_of(response)["code"] == "not_found"
    assert "set-cookie" not in response.headers


def test_a_cookie_domain_cannot_be_injected_through_the_workspace(
        shared_api: ApiServer) -> None:
    for suffix in ("/login", ""):
        response = _raw_get(shared_api, PAGE.format(ws=DOMAIN_INJECTION) + suffix)
        _assert_page_404(response)
        for cookie in response.headers.get_list("set-cookie"):
            assert "domain" not in cookie.lower()


@pytest.mark.parametrize("ws", MALFORMED)
@pytest.mark.parametrize("suffix", ["/login", "", "/stream", "/destinations/dst_a",
                                    "/destinations/dst_a/delete"])
def test_a_malformed_workspace_is_the_pages_404(shared_api: ApiServer, ws: str,
                                                suffix: str) -> None:
    """CR/LF was a dropped connection, non-Latin-1 a 500."""
    _assert_page_404(_raw_get(shared_api, PAGE.format(ws=ws) + suffix))


@pytest.mark.parametrize("ws", MALFORMED)
def test_a_malformed_workspace_is_the_apis_404(shared_api: ApiServer, ws: str) -> None:
    _, token = shared_api.create_workspace()
    for path in (f"/v1/workspaces/{ws}/destinations", f"/v1/workspaces/{ws}/events",
                 f"/v1/workspaces/{ws}/destinations/dst_a", f"/v1/workspaces/{ws}/tokens"):
        for who in (token, shared_api.admin_token):
            _assert_api_404(shared_api.call("GET", path, who))


#: The path parameters that are ids.
IDS = ["ws", "dest_id", "token_id"]


def _templates() -> list[tuple[str, str]]:
    """Every (method, path template) that takes a ``ws``, a ``dest_id`` or a ``token_id``:
    the routers of every module of ``auditrelay.api.routes``, and the settings page's."""
    routers = [web.router]
    for module in pkgutil.iter_modules(api_routes.__path__):
        routers.append(importlib.import_module(f"{api_routes.__name__}.{module.name}").router)
    found = [(method, route.path) for router in routers for route in router.routes
             if isinstance(route, APIRoute) for method in sorted(route.methods or ())
             if any(f"{{{name}}}" in route.path for name in IDS)]
    assert len(found) > 15  # the API's destination and events routes, and the page's
    return found


@pytest.mark.parametrize("bad", IDS)
def test_every_route_refuses_malformed_ids(shared_api: ApiServer, bad: str) -> None:
    """Each route of the app, API and page alike, whatever its method."""
    ws, token = shared_api.create_workspace()
    dest = shared_api.create_destination(ws, token)["id"]
    tokens = shared_api.call("GET", f"/v1/workspaces/{ws}/tokens", token).json()["items"]
    for method, template in _templates():
        if "{" + bad + "}" not in template:
            continue
        for value in MALFORMED:
            ids = {"ws": ws, "dest_id": dest, "token_id": tokens[0]["id"], "action": "enable",
                   bad: value}
            path = template
            for name, given in ids.items():
                path = path.replace("{" + name + "}", given)
            assert "{" not in path, path
            response = shared_api.call(method, path, token,
                                       headers={"Origin": shared_api.base_url})
            if template.startswith("/v1/"):
                _assert_api_404(response)
            else:
                _assert_page_404(response)


def test_well_formed_but_unknown_ids_are_still_404(shared_api: ApiServer) -> None:
    ws, token = shared_api.create_workspace()
    response = shared_api.call("GET", "/v1/workspaces/ws_doesnotexist/destinations",
                               shared_api.admin_token)
    _assert_api_404(response)
    assert "ws_doesnotexist" in error_of(response)["message"]
    response = shared_api.call("GET", f"/v1/workspaces/{ws}/destinations/dst_unknown", token)
    _assert_api_404(response)
    assert "dst_unknown" in error_of(response)["message"]
    # The page of a well-formed workspace still offers its sign-in form.
    assert _raw_get(shared_api, PAGE.format(ws="ws_doesnotexist") + "/login").status_code == 200
