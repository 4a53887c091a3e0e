"""The Workspace Settings page of webhook destinations, served by the API.

``install_web(app, settings)`` adds ``router``: ``/workspaces/{ws}/settings/webhooks``
(the page, a sign-in page, a destination's detail and delete-confirmation pages,
form POSTs, and a Server-Sent Events stream of live status), and the page's local
assets under ``/static/web/``. Everything is server-rendered; the script only
applies the live status pushes. Each handler gets a ``Pages`` (the dependency
``PagesDep``): the request, its workspace, the API's service and the page's key.

Auth: the sign-in form takes the workspace token and stores it in an HttpOnly,
SameSite=Strict cookie scoped to the workspace's page path (Secure over https).
Each request checks it exactly like a bearer token: unknown or missing → the
sign-in page, another workspace's → 404, a plan without forwarding → 402. Every
POST also carries a CSRF token, an HMAC of the session (``auditrelay.api.web_support``),
and is refused (403) without it or from another origin. Changes answer with a
redirect (POST-redirect-GET) and a signed flash cookie; creating a destination
and rotating its secret instead render the new secret once, with
``Cache-Control: no-store``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from auditrelay.api import web_support as support
from auditrelay.api.deps import DestinationId, ServiceDep, WorkspaceId, committed
from auditrelay.api.models import DestinationOut, DestinationPatch
from auditrelay.api.service import Service, workspace_actor
from auditrelay.schemas.errors import (
    AuthenticationError,
    EntitlementError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from auditrelay.schemas.ids import is_workspace_id
from auditrelay.schemas.settings import Settings
from auditrelay.store.db import Workspace
from auditrelay.store.engine import Store
from auditrelay.wire.secrets import load_or_create_dev_key

__all__ = ["PAGE", "Pages", "install_web", "router"]

log = logging.getLogger(__name__)

PAGE = "/workspaces/{ws}/settings/webhooks"
STATIC = "/static/web"
SESSION_COOKIE = "ar_session"
LOGIN_COOKIE = "ar_login"
FLASH_COOKIE = "ar_flash"
#: A heartbeat keeps proxies from closing the stream and refreshes "2m ago".
HEARTBEAT_SECONDS = 15.0
#: Streams end after this long and the browser reconnects: no stream outlives a
#: deploy for long, and a server shutting down never waits on one for ever.
STREAM_LIFETIME_SECONDS = 300.0
RECENT_ATTEMPTS = 20

_HERE = Path(__file__).parent
_SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; "
                                "img-src 'self'; connect-src 'self'; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # Pages show live state and, twice, a secret: never keep them in a cache.
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Signed:
    """A request whose session cookie opened its workspace."""

    workspace: Workspace
    token: str
    csrf: str


class PageRoute(APIRoute):
    """Turns the service's refusals into pages instead of JSON errors."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except AuthenticationError:
                ws = _well_formed_ws(request)
                if ws is None:
                    return _error_page(request, 404, "Not found", "There is no such page.")
                return RedirectResponse(login_path(ws), status_code=303)
            except NotFoundError:
                return _error_page(request, 404, "Not found",
                                   "There is no such page, or it is not yours to see.")
            except EntitlementError as exc:
                return _error_page(request, 402, "Your plan does not include forwarding",
                                   str(exc))
            except PermissionDeniedError as exc:
                return _error_page(request, 403, "Refused", str(exc))

        return handle


def page_path(ws: str) -> str:
    return PAGE.format(ws=ws)


def login_path(ws: str) -> str:
    return page_path(ws) + "/login"


templates = Jinja2Templates(directory=str(_HERE / "templates"))


def _render(request: Request, name: str, context: dict[str, Any],
            status_code: int = 200) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, {"static": STATIC, **context},
                                          status_code=status_code)
    response.headers.update(_SECURITY_HEADERS)
    return response


def _well_formed_ws(request: Request) -> str | None:
    """The path's workspace id if it is well formed: only such a one goes into a link."""
    ws = request.path_params.get("ws")
    return ws if is_workspace_id(ws) else None


def _error_page(request: Request, status: int, title: str, message: str) -> HTMLResponse:
    ws = _well_formed_ws(request)
    return _render(request, "error.html", {"title": title, "message": message,
                                           "page": page_path(ws) if ws else None}, status)


def _web_key(settings: Settings) -> bytes:
    if settings.secret_key is not None:
        return support.web_key(settings.secret_key.get_secret_value())
    key, _ = load_or_create_dev_key(settings.var_dir)  # the API already warned about it
    return support.web_key(key)


def install_web(app: FastAPI, settings: Settings) -> None:
    """Add the settings page's routes and assets to the API ``app``."""
    app.state.web_key = _web_key(settings)
    app.mount(STATIC, StaticFiles(directory=str(_HERE / "static")), name="web-static")
    app.include_router(router)


@dataclass(frozen=True)
class Pages:
    """One request to the page of workspace ``ws``, and what answering it takes."""

    request: Request
    ws: str
    service: Service
    key: bytes

    def reading(self) -> AbstractContextManager[Session]:
        """A transaction that changes nothing."""
        store: Store = self.request.app.state.store
        return store.transaction()

    def changing(self) -> AbstractContextManager[Session]:
        """A transaction whose commit wakes the outbox publisher."""
        return committed(self.request.app)

    def signed(self, session: Session) -> Signed:
        """The session of the request for ``ws``, checked like a bearer token."""
        token = self.request.cookies.get(SESSION_COOKIE)
        if not token:
            raise AuthenticationError("not signed in")
        workspace = self.service.workspace_for_token(session, token)
        if workspace is None:
            raise AuthenticationError("the session's token is not valid")
        if workspace.id != self.ws:
            # 404, not 403: another tenant's workspace must look like no workspace.
            raise NotFoundError(f"no workspace {self.ws}")
        self.service.require_forwarding(workspace)
        return Signed(workspace, token, support.csrf_token(self.key, self.ws, token))

    def signed_destination(self, dest_id: str) -> tuple[Signed, DestinationOut]:
        """The signed-in session and one of its workspace's destinations, as shown."""
        with self.reading() as session:
            who = self.signed(session)
            dest = self.service.to_out(
                self.service.get_destination(session, who.workspace, dest_id))
        return who, dest

    async def checked_form(self) -> dict[str, str]:
        """The form of a POST from a signed-in page; refuses forged requests."""
        request = self.request
        origin = f"{request.url.scheme}://{request.url.netloc}"
        if not support.same_origin(request.headers.get("origin"), origin):
            raise PermissionDeniedError("this form was sent from another site")
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        token = request.cookies.get(SESSION_COOKIE, "")
        if not token or not support.csrf_ok(self.key, self.ws, token, form.get("csrf")):
            # Unknown sessions go to the sign-in page rather than a refusal.
            with self.reading() as session:
                self.signed(session)
            raise PermissionDeniedError(
                "the form's security token is missing or stale; reload the page and try again")
        return form

    def redirect(self, message: str, kind: str = "info") -> Response:
        """POST-redirect-GET, carrying ``message`` to the page in a signed cookie."""
        response = RedirectResponse(page_path(self.ws), status_code=303)
        response.set_cookie(FLASH_COOKIE, support.sign_flash(self.key, message, kind),
                            max_age=60, path=page_path(self.ws), httponly=True,
                            samesite="strict", secure=self.request.url.scheme == "https")
        return response

    def take_flash(self, response: Response) -> None:
        """A flash message is shown once: the page that shows it clears its cookie."""
        if self.request.cookies.get(FLASH_COOKIE) is not None:
            response.delete_cookie(FLASH_COOKIE, path=page_path(self.ws))

    def flash(self) -> dict[str, str] | None:
        found = support.read_flash(self.key, self.request.cookies.get(FLASH_COOKIE))
        return {"message": found[0], "kind": found[1]} if found else None

    def page(self, *, form: dict[str, str] | None = None,
             errors: dict[str, str] | None = None, status: int = 200) -> HTMLResponse:
        with self.reading() as session:
            who = self.signed(session)
            dests = [self.service.to_out(d)
                     for d in self.service.list_destinations(session, who.workspace)]
        now = datetime.now(UTC)
        rows = [(d, support.row_status(d, now)) for d in dests]
        response = _render(self.request, "page.html", {
            "ws": self.ws, "workspace": who.workspace, "csrf": who.csrf, "rows": rows,
            "form": form or {}, "errors": errors or {}, "flash": self.flash(),
            "page": page_path(self.ws)}, status)
        self.take_flash(response)
        return response

    def login_page(self, error: str | None, status: int) -> HTMLResponse:
        # Login CSRF: a random nonce in a cookie, and its HMAC in the form.
        nonce = self.request.cookies.get(LOGIN_COOKIE) or support.new_nonce()
        response = _render(self.request, "login.html", {
            "ws": self.ws, "error": error, "csrf": support.csrf_token(self.key, self.ws, nonce),
            "action": login_path(self.ws)}, status)
        response.set_cookie(LOGIN_COOKIE, nonce, path=login_path(self.ws), httponly=True,
                            samesite="strict", secure=self.request.url.scheme == "https")
        return response

    def secret_page(self, dest_id: str, name: str, secret: str, *,
                    created: bool) -> HTMLResponse:
        return _render(self.request, "secret.html", {
            "ws": self.ws, "dest_id": dest_id, "name": name, "secret": secret,
            "created": created, "page": page_path(self.ws)}, 201 if created else 200)

    def statuses(self) -> list[dict[str, object]]:
        with self.reading() as session:
            who = self.signed(session)
            dests = [self.service.to_out(d)
                     for d in self.service.list_destinations(session, who.workspace)]
        now = datetime.now(UTC)
        return [support.row_status(d, now).as_dict() for d in dests]

    async def events(self) -> AsyncIterator[bytes]:
        yield b"retry: 3000\n\n"
        ends = time.monotonic() + STREAM_LIFETIME_SECONDS
        while time.monotonic() < ends and not await self.request.is_disconnected():
            try:
                rows = await run_in_threadpool(self.statuses)
            except (AuthenticationError, NotFoundError, EntitlementError):
                return  # signed out or token revoked: the browser's reconnect gets a redirect
            data = json.dumps({"destinations": rows})
            yield f"event: status\ndata: {data}\n\n".encode()
            await _wait_change(self.service)


def pages(request: Request, ws: WorkspaceId, service: ServiceDep) -> Pages:
    key: bytes = request.app.state.web_key
    return Pages(request, ws, service, key)


PagesDep = Annotated[Pages, Depends(pages)]

router = APIRouter(route_class=PageRoute, include_in_schema=False)

# -- sign-in -------------------------------------------------------------------------------


@router.get(PAGE + "/login", response_class=HTMLResponse)
def login_form(pages: PagesDep) -> HTMLResponse:
    return pages.login_page(None, 200)


@router.post(PAGE + "/login")
async def login(pages: PagesDep) -> Response:
    request, ws = pages.request, pages.ws
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not support.csrf_ok(pages.key, ws, nonce, form.get("csrf")):
        return pages.login_page("The sign-in form expired; please try again.", 403)
    token = form.get("token", "").strip()

    def lookup() -> Workspace | None:
        with pages.reading() as session:
            return pages.service.workspace_for_token(session, token) if token else None

    workspace = await run_in_threadpool(lookup)
    if workspace is None or workspace.id != ws:
        # One message for both: a token of another workspace reveals nothing.
        return pages.login_page("This token does not open this workspace.", 401)
    response = RedirectResponse(page_path(ws), status_code=303)
    response.set_cookie(SESSION_COOKIE, token, path=page_path(ws), httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    response.delete_cookie(LOGIN_COOKIE, path=login_path(ws))
    return response


@router.post(PAGE + "/logout")
async def logout(pages: PagesDep) -> Response:
    await pages.checked_form()
    response = RedirectResponse(login_path(pages.ws), status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=page_path(pages.ws))
    return response


# -- pages ---------------------------------------------------------------------------------


@router.get(PAGE, response_class=HTMLResponse)
def settings_page(pages: PagesDep) -> HTMLResponse:
    return pages.page()


@router.get(PAGE + "/destinations/{dest_id}", response_class=HTMLResponse)
def detail(pages: PagesDep, dest_id: DestinationId) -> HTMLResponse:
    ws = pages.ws
    who, dest = pages.signed_destination(dest_id)
    now = datetime.now(UTC)
    attempts = [(a, support.relative_time(a.at, now))
                for a in pages.service.recent_attempts(dest.id, RECENT_ATTEMPTS)]
    response = _render(pages.request, "detail.html", {
        "ws": ws, "dest": dest, "status": support.row_status(dest, now),
        "attempts": attempts, "csrf": who.csrf, "page": page_path(ws),
        "flash": pages.flash()})
    pages.take_flash(response)
    return response


@router.get(PAGE + "/destinations/{dest_id}/delete", response_class=HTMLResponse)
def confirm_delete(pages: PagesDep, dest_id: DestinationId) -> HTMLResponse:
    ws = pages.ws
    who, dest = pages.signed_destination(dest_id)
    return _render(pages.request, "confirm_delete.html", {
        "ws": ws, "dest": dest, "csrf": who.csrf, "page": page_path(ws)})


# -- changes -------------------------------------------------------------------------------


@router.post(PAGE + "/destinations")
async def create(pages: PagesDep) -> Response:
    form = await pages.checked_form()
    kept = {f: form.get(f, "") for f in support.FORM_FIELDS}

    def run() -> tuple[str, str, str]:
        with pages.changing() as session:
            who = pages.signed(session)
            body = support.destination_from_form(form)
            dest, secret = pages.service.create_destination(session, who.workspace, body,
                                                            workspace_actor(pages.ws))
            return dest.id, dest.name, secret

    try:
        dest_id, name, secret = await run_in_threadpool(run)
    except InvalidInputError as exc:
        errors = {support.form_field(exc): str(exc)}
        return await run_in_threadpool(lambda: pages.page(form=kept, errors=errors,
                                                          status=422))
    return pages.secret_page(dest_id, name, secret, created=True)


@router.post(PAGE + "/destinations/{dest_id}/{action}")
async def change(pages: PagesDep, dest_id: DestinationId, action: str) -> Response:
    if action not in ("enable", "disable", "delete", "rotate-secret", "test"):
        raise NotFoundError(f"no action {action}")
    await pages.checked_form()
    if action == "test":
        return await _send_test(pages, dest_id)
    service = pages.service

    def run() -> tuple[str, str | None]:
        with pages.changing() as session:
            who = pages.signed(session)
            actor = workspace_actor(pages.ws)
            if action == "rotate-secret":
                secret = service.rotate_secret(session, who.workspace, dest_id, actor)
                return service.get_destination(session, who.workspace, dest_id).name, secret
            if action == "delete":
                name = service.get_destination(session, who.workspace, dest_id).name
                service.delete_destination(session, who.workspace, dest_id, actor)
                return name, None
            patch = DestinationPatch(enabled=action == "enable")
            return service.update_destination(session, who.workspace, dest_id, patch,
                                              actor).name, None

    name, secret = await run_in_threadpool(run)
    if secret is not None:
        return pages.secret_page(dest_id, name, secret, created=False)
    done = {"enable": "enabled", "disable": "disabled", "delete": "deleted"}[action]
    return pages.redirect(f"{name} {done}.")


async def _send_test(pages: Pages, dest_id: str) -> Response:
    service = pages.service

    def prepare() -> tuple[str, bytes, dict[str, str], str]:
        with pages.changing() as session:
            who = pages.signed(session)
            dest = service.get_destination(session, who.workspace, dest_id)
            url, body, headers = service.prepare_test(session, dest,
                                                      workspace_actor(pages.ws))
            return url, body, headers, dest.name

    url, body, headers, name = await run_in_threadpool(prepare)
    result = await service.send_test(url, body, headers)
    text = support.test_outcome_text(result.ok, result.status_code, result.latency_ms,
                                     result.error)
    return pages.redirect(f"{name}: {text}", "ok" if result.ok else "error")


# -- live status ---------------------------------------------------------------------------


@router.get(PAGE + "/stream")
def stream(pages: PagesDep) -> StreamingResponse:
    with pages.reading() as session:
        pages.signed(session)
    response = StreamingResponse(pages.events(), media_type="text/event-stream")
    response.headers.update({"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    return response


async def _wait_change(service: Service) -> None:
    """Until a status changes, or the heartbeat is due."""
    if service.view is None:
        await asyncio.sleep(HEARTBEAT_SECONDS)  # no Kafka view: heartbeat only
        return
    await service.view.board.wait_change(HEARTBEAT_SECONDS)
