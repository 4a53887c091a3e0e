"""Pure helpers of the settings page (``auditrelay.api.web``): relative times, status texts,
the rows of the token list, CSRF tokens, signed flash messages and the parsing of the
add-destination and create-token forms.

Nothing here does I/O, so every rule of the page's wording and of its request
forgery protection is unit-tested without a server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from auditrelay.api.models import DestinationIn, DestinationOut, TokenIn, TokenOut
from auditrelay.schemas.errors import InvalidInputError

#: Below this age a delivery reads "just now": the live push and the page load
#: both land within a few seconds of the attempt.
JUST_NOW_SECONDS = 10
_UNITS = ((86400, "d"), (3600, "h"), (60, "m"), (1, "s"))
FORM_FIELDS = ("name", "url", "event_types", "description", "headers")


def relative_time(then: datetime, now: datetime) -> str:
    """``just now``, ``42s ago``, ``5m ago``, ``3h ago`` or ``2d ago`` (floored).

    A time in the future (clocks of two hosts differ a little) reads "just now".
    """
    seconds = int((now - then).total_seconds())
    if seconds < JUST_NOW_SECONDS:
        return "just now"
    for size, unit in _UNITS:
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return "just now"  # unreachable: seconds >= JUST_NOW_SECONDS >= 1


@dataclass(frozen=True)
class RowStatus:
    """What the status cells of one destination's row say."""

    id: str
    delivery: str
    failed: bool
    badge: str
    reason: str | None

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "delivery": self.delivery, "failed": self.failed,
                "badge": self.badge, "reason": self.reason}


def delivery_text(dest: DestinationOut, now: datetime) -> str:
    """``Last delivery 2m ago``, ``Last delivery 3d ago (failed)`` or ``No deliveries yet``."""
    if dest.last_delivery_at is None:
        return "No deliveries yet"
    text = f"Last delivery {relative_time(dest.last_delivery_at, now)}"
    return text + " (failed)" if dest.last_delivery_ok is False else text


def row_status(dest: DestinationOut, now: datetime) -> RowStatus:
    return RowStatus(
        id=dest.id, delivery=delivery_text(dest, now), failed=dest.last_delivery_ok is False,
        badge="Active" if dest.status == "active" else "Disabled",
        reason=None if dest.status == "active" else (dest.disabled_reason or "manual"))


@dataclass(frozen=True)
class TokenRow:
    """One row of the page's token list: never the token, only its first characters."""

    id: str
    name: str
    prefix: str | None
    created: str
    last_used: str
    #: The token that opened this session: revoking it signs this page out.
    current: bool


def token_row(token: TokenOut, now: datetime, *, current: bool) -> TokenRow:
    last_used = "Never" if token.last_used_at is None else relative_time(token.last_used_at, now)
    return TokenRow(id=token.id, name=token.name, prefix=token.prefix,
                    created=relative_time(token.created_at, now), last_used=last_used,
                    current=current)


def token_from_form(form: Mapping[str, str]) -> TokenIn:
    """The API body of the create-token form; ``InvalidInputError`` says what is wrong."""
    try:
        return TokenIn(name=form.get("token_name", "").strip())
    except ValidationError as exc:
        message = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        raise InvalidInputError(f"token name: {message}", field="token_name") from exc


def test_outcome_text(delivered: bool, status_code: int | None, latency_ms: int,
                      error: str | None) -> str:
    """``Test delivered (200, 123 ms)`` or ``Test failed: HTTP 500 (500, 12 ms)``."""
    code = str(status_code) if status_code is not None else "no response"
    if delivered:
        return f"Test delivered ({code}, {latency_ms} ms)"
    return f"Test failed: {error or 'not delivered'} ({code}, {latency_ms} ms)"


# -- CSRF ----------------------------------------------------------------------------------


def web_key(secret_key: str) -> bytes:
    """The page's HMAC key, derived from the key of secrets at rest (never used raw)."""
    return hmac.new(secret_key.encode(), b"auditrelay web page v1", hashlib.sha256).digest()


def csrf_token(key: bytes, workspace_id: str, session_id: str) -> str:
    """The form token of one signed-in session: an HMAC of the session id, not stored.

    It binds the form to this workspace and this session (the random id of the page's
    server-side session, or the sign-in form's nonce): a page of another site cannot
    read it, another session of the same token has another, and it dies with the session.
    """
    session = hashlib.sha256(session_id.encode()).hexdigest()
    mac = hmac.new(key, f"csrf|{workspace_id}|{session}".encode(), hashlib.sha256)
    return mac.hexdigest()


def new_nonce() -> str:
    """A random value standing in for the session before sign-in (login CSRF)."""
    return secrets.token_urlsafe(24)


def csrf_ok(key: bytes, workspace_id: str, session_id: str, given: str | None) -> bool:
    if not given:
        return False
    return hmac.compare_digest(given.encode(), csrf_token(key, workspace_id,
                                                          session_id).encode())


def same_origin(origin: str | None, expected: str) -> bool:
    """A request without ``Origin`` passes (old clients); one with another origin does not."""
    return origin is None or origin.rstrip("/") == expected.rstrip("/")


# -- flash messages ------------------------------------------------------------------------


def sign_flash(key: bytes, message: str, kind: str) -> str:
    """A cookie value carrying one message to the next page, tamper-proof."""
    payload = base64.urlsafe_b64encode(json.dumps({"m": message, "k": kind}).encode()).decode()
    mac = hmac.new(key, f"flash|{payload}".encode(), hashlib.sha256).hexdigest()
    return f"{payload}.{mac}"


def read_flash(key: bytes, value: str | None) -> tuple[str, str] | None:
    """``(message, kind)`` of a cookie made by ``sign_flash``; None if absent or forged."""
    if not value or "." not in value:
        return None
    payload, mac = value.rsplit(".", 1)
    expected = hmac.new(key, f"flash|{payload}".encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(mac.encode(), expected.encode()):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload.encode()))
        return str(data["m"]), str(data["k"])
    except (ValueError, KeyError, TypeError):
        return None


# -- the add-destination form --------------------------------------------------------------


def split_globs(text: str) -> list[str]:
    """Event-type filters typed one per line or separated by commas."""
    return [part.strip() for line in text.splitlines() for part in line.split(",")
            if part.strip()]


def parse_headers(text: str) -> dict[str, str]:
    """``Name: value`` lines; blank lines are skipped."""
    headers: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise InvalidInputError(f"headers: line {number} must read Name: value",
                                    field="headers")
        headers[name.strip()] = value.strip()
    return headers


def destination_from_form(form: Mapping[str, str]) -> DestinationIn:
    """The API body of the form's fields; ``InvalidInputError`` names the first wrong field."""
    description = form.get("description", "").strip()
    try:
        return DestinationIn(
            name=form.get("name", "").strip(), url=form.get("url", "").strip(),
            description=description or None,
            event_types=split_globs(form.get("event_types", "")),
            headers=parse_headers(form.get("headers", "")))
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "name"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidInputError(f"{field}: {message}", field=field) from exc


def form_field(error: InvalidInputError) -> str:
    """The form field an error belongs to: ``headers.X-Name`` is the headers field."""
    field = (error.field or "").split(".", 1)[0]
    return field if field in FORM_FIELDS else "name"
