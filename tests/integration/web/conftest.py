"""Fixtures of the settings page suite: a real API on loopback, driven over HTTP.

``web_api`` is one unpublished app (SQLite) per module; each test signs in to a
workspace of its own with ``signed_in``, an ``httpx.Client`` with its own
cookie jar, like one browser.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.integration.api.conftest import ApiServer, running_api

PAGE = "/workspaces/{ws}/settings/webhooks"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found is not None, "the page has no CSRF field"
    return found.group(1)


@dataclass
class WebUser:
    """One browser's HTTP session on the settings page of ``ws``."""

    api: ApiServer
    ws: str
    token: str
    http: httpx.Client

    @property
    def page(self) -> str:
        return PAGE.format(ws=self.ws)

    def get(self, path: str = "") -> httpx.Response:
        return self.http.get(self.page + path)

    @property
    def session_id(self) -> str:
        """The value of this browser's session cookie (a random id, not the token)."""
        value = self.http.cookies.get("ar_session")
        assert value, "not signed in"
        return value

    def csrf(self) -> str:
        response = self.get()
        assert response.status_code == 200, response.text
        return csrf_of(response.text)

    def post(self, path: str, data: dict[str, str] | None = None, *,
             csrf: str | None = None, **kwargs: Any) -> httpx.Response:
        form = {"csrf": self.csrf() if csrf is None else csrf, **(data or {})}
        return self.http.post(self.page + path, data=form, **kwargs)

    def add(self, *, csrf: str | None = None, http_headers: dict[str, str] | None = None,
            **fields: str) -> httpx.Response:
        """POST the add-destination form; ``fields`` are form fields (``headers`` too)."""
        form = {"name": "SIEM", "url": "https://siem.example.com/in", **fields}
        return self.post("/destinations", form, csrf=csrf, headers=http_headers or {})


@contextmanager
def sign_in(api: ApiServer, ws: str, token: str) -> Iterator[httpx.Client]:
    """A client with the session cookie of ``token``, signed in through the form."""
    with httpx.Client(base_url=api.base_url, timeout=30.0) as client:
        login = PAGE.format(ws=ws) + "/login"
        form = client.get(login)
        assert form.status_code == 200
        done = client.post(login, data={"token": token, "csrf": csrf_of(form.text)})
        assert done.status_code == 303, done.text
        assert done.headers["location"] == PAGE.format(ws=ws)
        yield client


@pytest.fixture(scope="module")
def web_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    tmp = tmp_path_factory.mktemp("web")
    with running_api(f"sqlite:///{tmp / 'api.db'}", tmp / "var") as server:
        yield server


@pytest.fixture
def user(web_api: ApiServer) -> Iterator[WebUser]:
    """Signed in to a fresh Enterprise workspace."""
    ws, token = web_api.create_workspace()
    with sign_in(web_api, ws, token) as client:
        yield WebUser(web_api, ws, token, client)


def anonymous(api: ApiServer) -> httpx.Client:
    return httpx.Client(base_url=api.base_url, timeout=30.0)


__all__ = ["PAGE", "WebUser", "anonymous", "csrf_of", "sign_in"]
