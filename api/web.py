"""The Workspace Settings page of destinations (every kind), served by the API.

``install_web(app, settings)`` adds ``router``: ``/workspaces/{ws}/settings/webhooks``
(the page, a sign-in page, a destination's detail and delete-confirmation pages,
form POSTs (add and edit a destination of any registered kind, with the kind's own
fields: ``auditrelay.api.web_support``), the workspace's API tokens (listed, created
and shown once, revoked), and a Server-Sent Events stream of live status), and the
page's local assets under ``/static/web/``. Everything is server-rendered; the script
only shows the selected kind's fields and applies the live status pushes. Each handler
gets a ``Pages`` (the dependency ``PagesDep``): the request, its workspace, the API's
service and the page's key.

Auth: the sign-in form takes a workspace token and opens a server-side session
(``auditrelay.api.page_sessions``): the HttpOnly, SameSite=Strict cookie scoped to
the workspace's page path (Secure over https) holds the session's random id, never
the token. Each request looks the session up: unknown, expired (idle longer than
``page_session_idle_seconds``), signed out or of a revoked token → the sign-in page,
another workspace's → 404, a plan without forwarding → 402. Every POST also carries a
CSRF token, an HMAC of the session id (``auditrelay.api.web_support``), and is
refused (403) without it or from another origin. Changes answer with a
redirect (POST-redirect-GET) and a signed flash cookie; creating a webhook
destination and rotating its secret instead render the new secret once, with
``Cache-Control: no-store`` (other kinds are not signed: their credentials, typed in,
are never shown back). A refused form is shown again (422) with the service's message
next to the field it names, and what was typed but the secrets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy.orm import Session

from auditrelay.api import page_sessions
from auditrelay.api import web_support as support
from auditrelay.api.deps import DestinationId, ServiceDep, TokenId, WorkspaceId, committed
from auditrelay.api.models import DestinationOut, DestinationPatch, TokenOut
from auditrelay.api.ratelimit import ApiLimits, client_address, retry_after_header
from auditrelay.api.service import Service, TestBatch, workspace_actor
from auditrelay.schemas.errors import (
    AuthenticationError,
    ConflictError,
    EntitlementError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitedError,
)
from auditrelay.schemas.ids import is_workspace_id
from auditrelay.schemas.settings import Settings
from auditrelay.store.db import Workspace, WorkspaceToken, utcnow
from auditrelay.store.engine import Store
from auditrelay.wire.kinds import signed
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
#: How often a stream checks that its session still exists: signing out or revoking
#: the token ends it within this long.
SESSION_CHECK_SECONDS = 2.0
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
    session_id: str
    token_id: str
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
            except RateLimitedError as exc:
                page = _error_page(request, 429, "Too many requests", str(exc))
                page.headers["Retry-After"] = retry_after_header(exc.retry_after)
                return page

        return handle


def page_path(ws: str) -> str:
    return PAGE.format(ws=ws)


def login_path(ws: str) -> str:
    return page_path(ws) + "/login"


templates = Jinja2Templates(directory=str(_HERE / "templates"))
# The forms are made from the kinds registry, read at each render.
templates.env.globals.update(kind_label=support.kind_label, kind_signed=signed,
                             kind_forms=support.kind_forms, shared_fields=support.shared_fields)


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

    def signed(self, session: Session, *, active: bool = True) -> Signed:
        """The session of the request for ``ws``; ``active=False`` for the live-status
        stream, which the browser keeps open by itself and so keeps no session alive."""
        session_id = self.request.cookies.get(SESSION_COOKIE, "")
        found = self.live_session(session_id, active=active)
        if found is None:
            raise AuthenticationError("not signed in, or the session ended")
        if found.workspace_id != self.ws:
            # 404, not 403: another tenant's workspace must look like no workspace.
            raise NotFoundError(f"no workspace {self.ws}")
        workspace = session.get(Workspace, self.ws)
        if workspace is None:
            raise AuthenticationError("the session's workspace is gone")
        self.service.require_forwarding(workspace)
        return Signed(workspace, session_id, found.token_id,
                      support.csrf_token(self.key, self.ws, session_id))

    def live_session(self, session_id: str, *, active: bool) -> page_sessions.Found | None:
        """The session of ``session_id`` if it is live, in a transaction of its own: an
        expired session's deletion is committed even though the request then fails."""
        if not session_id:
            return None
        store: Store = self.request.app.state.store
        now = utcnow()
        with store.transaction() as db:
            found = page_sessions.find(db, session_id, idle=self.idle, now=now, active=active)
            if found is not None and found.refreshed:
                # A person using the page uses its token: "last used" must say so.
                token = db.get(WorkspaceToken, found.token_id)
                if token is not None:
                    self.service.note_token_use(token, now)
            return found

    def still_signed(self) -> bool:
        """Whether the request's session still opens ``ws`` (no use noted)."""
        found = self.live_session(self.request.cookies.get(SESSION_COOKIE, ""), active=False)
        return found is not None and found.workspace_id == self.ws

    @property
    def idle(self) -> timedelta:
        return timedelta(seconds=self.service.settings.page_session_idle_seconds)

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
        session_id = request.cookies.get(SESSION_COOKIE, "")
        if not session_id or not support.csrf_ok(self.key, self.ws, session_id,
                                                 form.get("csrf")):
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
            tokens = [TokenOut(id=t.id, name=t.name, prefix=t.prefix, created_at=t.created_at,
                               last_used_at=t.last_used_at)
                      for t in self.service.list_tokens(session, who.workspace)]
        now = datetime.now(UTC)
        rows = [(d, support.row_status(d, now)) for d in dests]
        token_rows = [support.token_row(t, now, current=t.id == who.token_id) for t in tokens]
        response = _render(self.request, "page.html", {
            "ws": self.ws, "workspace": who.workspace, "csrf": who.csrf, "rows": rows,
            "tokens": token_rows, "form": form or {}, "errors": errors or {},
            "flash": self.flash(), "page": page_path(self.ws)}, status)
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
            who = self.signed(session, active=False)
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
            if not await self._wait_signed(min(ends, time.monotonic() + HEARTBEAT_SECONDS)):
                return

    async def _wait_signed(self, until: float) -> bool:
        """Until a status changes or ``until`` (True), checking every few seconds that the
        session still exists: False as soon as it does not (signed out, expired, revoked)."""
        while (left := until - time.monotonic()) > 0:
            if await _wait_change(self.service, min(left, SESSION_CHECK_SECONDS)):
                return True
            if not await run_in_threadpool(self.still_signed):
                return False
        return True


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
    previous = request.cookies.get(SESSION_COOKIE, "")
    # Refused before the token is looked at, as the API's bearer tokens are.
    limits: ApiLimits = request.app.state.limits
    address = client_address(request)
    try:
        limits.check_authentication(address, ws)
    except RateLimitedError as exc:
        refused = pages.login_page(f"Sign-in refused: {exc}.", 429)
        refused.headers["Retry-After"] = retry_after_header(exc.retry_after)
        return refused

    def open_session() -> str | None:
        """A new session of ``token`` if it opens ``ws``; the browser's previous one ends."""
        now = utcnow()
        with pages.changing() as session:
            row = pages.service.token_row(session, token) if token else None
            if row is None or row.workspace_id != ws:
                return None
            pages.service.note_token_use(row, now)
            page_sessions.close(session, previous)
            page_sessions.purge_expired(session, idle=pages.idle, now=now)
            return page_sessions.open_session(session, row, now)

    session_id = await run_in_threadpool(open_session)
    if session_id is None:
        if token:
            limits.failed_authentication(address, ws, via="sign_in")
        # One message for both: a token of another workspace reveals nothing.
        return pages.login_page("This token does not open this workspace.", 401)
    response = RedirectResponse(page_path(ws), status_code=303)
    # A fresh id at every sign-in: a cookie planted before it (fixation) opens nothing.
    response.set_cookie(SESSION_COOKIE, session_id, path=page_path(ws), httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    response.delete_cookie(LOGIN_COOKIE, path=login_path(ws))
    return response


@router.post(PAGE + "/logout")
async def logout(pages: PagesDep) -> Response:
    await pages.checked_form()
    session_id = pages.request.cookies.get(SESSION_COOKIE, "")

    def close() -> None:
        with pages.changing() as session:
            page_sessions.close(session, session_id)

    # Deleted on the server: a copy of the cookie kept anywhere opens nothing any more.
    await run_in_threadpool(close)
    response = RedirectResponse(login_path(pages.ws), status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=page_path(pages.ws))
    return response


# -- pages ---------------------------------------------------------------------------------


@router.get(PAGE, response_class=HTMLResponse)
def settings_page(pages: PagesDep) -> HTMLResponse:
    return pages.page()


@router.get(PAGE + "/destinations/{dest_id}", response_class=HTMLResponse)
def detail(pages: PagesDep, dest_id: DestinationId) -> HTMLResponse:
    return _detail_page(pages, dest_id)


def _detail_page(pages: Pages, dest_id: str, *, form: dict[str, str] | None = None,
                 errors: dict[str, str] | None = None, status: int = 200) -> HTMLResponse:
    ws = pages.ws
    who, dest = pages.signed_destination(dest_id)
    now = datetime.now(UTC)
    attempts = [(a, support.relative_time(a.at, now))
                for a in pages.service.recent_attempts(dest.id, RECENT_ATTEMPTS)]
    response = _render(pages.request, "detail.html", {
        "ws": ws, "dest": dest, "status": support.row_status(dest, now),
        "attempts": attempts, "csrf": who.csrf, "page": page_path(ws),
        "kinds": support.kind_forms(dest), "form": form or {}, "errors": errors or {},
        "flash": pages.flash()}, status)
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
    kept = support.kept_values(form)

    def run() -> tuple[str, str, str | None]:
        with pages.changing() as session:
            who = pages.signed(session)
            body = support.destination_from_form(form)
            dest, secret = pages.service.create_destination(session, who.workspace, body,
                                                            workspace_actor(pages.ws))
            # Only a webhook is signed: other kinds have no secret to show.
            return dest.id, dest.name, secret if signed(dest.kind) else None

    try:
        dest_id, name, secret = await run_in_threadpool(run)
    except QuotaExceededError as exc:
        return pages.redirect(f"The destination was not added: {exc}.", "error")
    except InvalidInputError as exc:
        errors = {support.form_field(exc, support.form_kind(form)): str(exc)}
        return await run_in_threadpool(lambda: pages.page(form=kept, errors=errors,
                                                          status=422))
    if secret is None:
        return pages.redirect(f"{name} added.", "ok")
    return pages.secret_page(dest_id, name, secret, created=True)


@router.post(PAGE + "/destinations/{dest_id}/{action}")
async def change(pages: PagesDep, dest_id: DestinationId, action: str) -> Response:
    if action not in ("enable", "disable", "delete", "rotate-secret", "test", "url", "edit"):
        raise NotFoundError(f"no action {action}")
    form = await pages.checked_form()
    if action == "test":
        return await _send_test(pages, dest_id)
    if action == "edit":
        return await _edit(pages, dest_id, form)
    if action == "url":
        return await _replace_url(pages, dest_id, form.get("url", "").strip())
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

    try:
        name, secret = await run_in_threadpool(run)
    except ConflictError as exc:
        return pages.redirect(str(exc), "error")  # a kind without a secret to rotate
    if secret is not None:
        return pages.secret_page(dest_id, name, secret, created=False)
    done = {"enable": "enabled", "disable": "disabled", "delete": "deleted"}[action]
    return pages.redirect(f"{name} {done}.")


async def _edit(pages: Pages, dest_id: str, form: dict[str, str]) -> Response:
    """The detail page's edit form, checked as the API's PATCH is; a refused form is
    shown again with the message next to its field."""
    service = pages.service

    def run() -> str:
        with pages.changing() as session:
            who = pages.signed(session)
            patch = support.patch_from_form(form)
            return service.update_destination(session, who.workspace, dest_id, patch,
                                              workspace_actor(pages.ws)).name

    try:
        name = await run_in_threadpool(run)
    except InvalidInputError as exc:
        errors = {support.form_field(exc, support.form_kind(form)): str(exc)}
        kept = support.kept_values(form)
        return await run_in_threadpool(
            lambda: _detail_page(pages, dest_id, form=kept, errors=errors, status=422))
    return pages.redirect(f"{name} saved.", "ok")


async def _replace_url(pages: Pages, dest_id: str, url: str) -> Response:
    """A new URL alone (the form before the edit form; kept for what posts it), checked
    as the API's PATCH checks it. The answer names the URL's host at most (it may be the
    credential)."""
    service = pages.service

    def run() -> str:
        with pages.changing() as session:
            who = pages.signed(session)
            try:
                patch = DestinationPatch(url=url)
            except ValidationError as exc:
                raise InvalidInputError(f"url: {exc.errors()[0]['msg']}", field="url") from exc
            return service.update_destination(session, who.workspace, dest_id, patch,
                                              workspace_actor(pages.ws)).name

    try:
        name = await run_in_threadpool(run)
    except InvalidInputError as exc:
        return pages.redirect(f"The URL was not replaced: {exc}", "error")
    return pages.redirect(f"{name}: URL replaced.")


@router.post(PAGE + "/tokens")
async def create_token(pages: PagesDep) -> Response:
    form = await pages.checked_form()

    def run() -> tuple[str, str | None, str]:
        with pages.changing() as session:
            who = pages.signed(session)
            body = support.token_from_form(form)
            row, token = pages.service.issue_token(session, who.workspace, body.name,
                                                   workspace_actor(pages.ws))
            return row.name, row.prefix, token

    try:
        name, prefix, token = await run_in_threadpool(run)
    except (InvalidInputError, ConflictError) as exc:
        return pages.redirect(f"The token was not created: {exc}", "error")
    return _render(pages.request, "token.html", {
        "ws": pages.ws, "name": name, "prefix": prefix, "token": token,
        "page": page_path(pages.ws)}, 201)


@router.post(PAGE + "/tokens/{token_id}/revoke")
async def revoke_token(pages: PagesDep, token_id: TokenId) -> Response:
    await pages.checked_form()

    def run() -> tuple[str, bool]:
        with pages.changing() as session:
            who = pages.signed(session)
            name = next((t.name for t in pages.service.list_tokens(session, who.workspace)
                         if t.id == token_id), token_id)
            # Like a workspace token on the API: never its last token (409), so that a
            # workspace cannot lock itself out from its own settings page.
            pages.service.revoke_token(session, who.workspace, token_id,
                                       workspace_actor(pages.ws), may_revoke_last=False)
            return name, token_id == who.token_id

    try:
        name, own = await run_in_threadpool(run)
    except ConflictError as exc:
        return pages.redirect(str(exc), "error")
    if own:
        # This session went with its token: back to the sign-in page.
        response = RedirectResponse(login_path(pages.ws), status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=page_path(pages.ws))
        return response
    return pages.redirect(f"Token {name} revoked.")


async def _send_test(pages: Pages, dest_id: str) -> Response:
    service = pages.service

    def prepare() -> tuple[TestBatch, str]:
        with pages.changing() as session:
            who = pages.signed(session)
            dest = service.get_destination(session, who.workspace, dest_id)
            limits: ApiLimits = pages.request.app.state.limits
            limits.take_test_send(who.workspace.id, dest.id)
            return service.prepare_test(session, dest, workspace_actor(pages.ws)), dest.name

    try:
        test, name = await run_in_threadpool(prepare)
    except RateLimitedError as exc:
        return pages.redirect(f"The test was not sent: {exc}.", "error")
    result, words = await service.send_test(test)
    delivered = result.ok and result.rejected is None
    text = support.test_outcome_text(delivered, result.status_code, result.latency_ms, words)
    return pages.redirect(f"{name}: {text}", "ok" if delivered else "error")


# -- live status ---------------------------------------------------------------------------


@router.get(PAGE + "/stream")
def stream(pages: PagesDep) -> StreamingResponse:
    with pages.reading() as session:
        pages.signed(session, active=False)
    response = StreamingResponse(pages.events(), media_type="text/event-stream")
    response.headers.update({"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    return response


async def _wait_change(service: Service, timeout: float) -> bool:
    """Until a status changes (True), or for ``timeout`` seconds (False)."""
    if service.view is None:
        await asyncio.sleep(timeout)  # no Kafka view: heartbeats only
        return False
    return await service.view.board.wait_change(timeout)
