"""Pure helpers of the settings page (``auditrelay.api.web``): relative times, status texts,
the rows of the token list, CSRF tokens, signed flash messages, the fields of the
destination forms and their parsing, and the create-token form.

The destination forms are made from the kinds registry (``auditrelay.wire.kinds.KINDS``):
each kind's URL, its ``Options`` model's fields (bool: a checkbox, Literal or Enum: a
list, numbers, lists of strings, other: text; defaults filled in) and its credential
names (password fields, never filled in). A kind added to the registry is on the page
without a change here. Form names: ``{kind}.url``, ``{kind}.options.{name}``,
``{kind}.credentials.{name}``; the shared fields keep their names.

Nothing here does I/O, so every rule of the page's wording and of its request
forgery protection is unit-tested without a server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from auditrelay.api.models import (
    DestinationIn,
    DestinationOut,
    DestinationPatch,
    TokenIn,
    TokenOut,
)
from auditrelay.schemas.errors import InvalidInputError
from auditrelay.wire.kinds import DEFAULT_KIND, KINDS, kind_named, signed
from auditrelay.wire.kinds.base import Kind

#: Below this age a delivery reads "just now": the live push and the page load
#: both land within a few seconds of the attempt.
JUST_NOW_SECONDS = 10
_UNITS = ((86400, "d"), (3600, "h"), (60, "m"), (1, "s"))
#: The fields every kind shares (each kind's own are named after it: ``{kind}.url``...).
FORM_FIELDS = ("name", "kind", "event_types", "description", "headers")
_TRUE = ("true", "on", "1", "yes")


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
                      words: str | None) -> str:
    """``Test delivered: Splunk HEC accepted the event (200, 123 ms)`` or
    ``Test failed: Datadog rejected the API key (403, 12 ms)``: the receiver's verdict in
    words (``Service.send_test``), then the status code and the time taken."""
    code = str(status_code) if status_code is not None else "no response"
    if delivered:
        said = f": {words}" if words else ""
        return f"Test delivered{said} ({code}, {latency_ms} ms)"
    return f"Test failed: {words or 'not delivered'} ({code}, {latency_ms} ms)"


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


# -- the destination forms ----------------------------------------------------------------


@dataclass(frozen=True)
class FormField:
    """One input of a destination form; ``key`` is its form name."""

    key: str
    label: str
    #: ``text``, ``url``, ``number``, ``password``, ``checkbox``, ``select`` or ``textarea``.
    widget: str
    hint: str = ""
    #: Filled in ("true" checks a checkbox); never a secret.
    value: str = ""
    #: (value, label) of a select's options.
    choices: tuple[tuple[str, str], ...] = ()
    required: bool = False

    @property
    def id(self) -> str:
        return "f-" + self.key.replace(".", "-")


@dataclass(frozen=True)
class KindForm:
    """A kind's part of the destination form: shown while the kind is selected."""

    name: str
    label: str
    fields: tuple[FormField, ...]
    #: Whether its destinations are signed (and so have a secret to show and rotate).
    signed: bool
    #: What the kind does by default that the form does not show (its filters).
    note: str = ""


def kind_label(name: str) -> str:
    """What the page calls the kind ``name`` (a kind no longer registered: its name)."""
    kind = KINDS.get(name)
    return kind.label if kind is not None else name


def kind_choices() -> tuple[tuple[str, str], ...]:
    return tuple((kind.name, kind.label) for kind in KINDS.values())


def kind_forms(current: DestinationOut | None = None) -> list[KindForm]:
    """Every registered kind's part of the form; ``current``: the edit form of that
    destination (its kind's options filled in, URL and credentials empty: kept)."""
    return [_kind_form(kind, current) for kind in KINDS.values()]


def _kind_form(kind: Kind, current: DestinationOut | None) -> KindForm:
    editing = current is not None
    values = dict(current.options) if current is not None and current.kind == kind.name else {}
    fields = [_url_field(kind, editing)]
    fields += [_option_field(kind, name, info, values.get(name))
               for name, info in kind.Options.model_fields.items()]
    fields += [_credential_field(kind, name, editing) for name in kind.credentials.names]
    note = ""
    if kind.default_categories:
        note = ("Without event-type filters it receives these categories only: "
                + ", ".join(kind.default_categories) + ".")
    return KindForm(kind.name, kind.label, tuple(fields), signed(kind.name), note)


def _url_field(kind: Kind, editing: bool) -> FormField:
    key = f"{kind.name}.url"
    label = kind.url_label or "URL"
    if kind.url_choices:
        hint = kind.url_hint_text or "The site your account is on."
        choices = tuple((url, text) for text, url in kind.url_choices)
        if editing:
            return FormField(key, label, "select", hint, "",
                             (("", "Keep the saved one"), *choices))
        return FormField(key, label, "select", hint, choices[0][0], choices, required=True)
    hint = kind.url_hint_text or "https:// only; the host must be public."
    if editing:
        hint += " Leave empty to keep the saved URL (only its start is shown above)."
    return FormField(key, label, "url", hint, required=not editing)


def _words(name: str) -> str:
    text = name.replace("_", " ")
    text = " ".join("API" if word == "api" else "ID" if word == "id" else word
                    for word in text.split())
    return text[:1].upper() + text[1:]


def _plain_type(annotation: Any) -> tuple[Any, bool]:
    """The type of an option without ``None``, and whether ``None`` is allowed."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _widget(annotation: Any) -> tuple[str, tuple[tuple[str, str], ...]]:
    plain, optional = _plain_type(annotation)
    none = (("", "(none)"),) if optional else ()
    if plain is bool:
        return "checkbox", ()
    if typing.get_origin(plain) is typing.Literal:
        return "select", none + tuple((str(v), str(v)) for v in typing.get_args(plain)
                                      if v is not None)
    if isinstance(plain, type) and issubclass(plain, Enum):
        return "select", none + tuple((str(m.value), str(m.value)) for m in plain)
    if plain in (int, float):
        return "number", ()
    if typing.get_origin(plain) in (list, tuple, set, frozenset):
        return "textarea", ()
    return "text", ()


def _shown(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else ""
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, list | tuple | set | frozenset):
        return "\n".join(str(item) for item in value)
    return str(value)


def _option_field(kind: Kind, name: str, info: FieldInfo, current: Any) -> FormField:
    widget, choices = _widget(info.annotation)
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    value = _shown(current if current is not None else default)
    hint = info.description or ""
    if default not in (None, "", False) and widget != "checkbox" and not choices:
        hint = f"{hint} Default: {_shown(default)}.".strip()
    if widget == "textarea":
        hint = f"{hint} One per line.".strip()
    return FormField(f"{kind.name}.options.{name}", info.title or _words(name), widget, hint,
                     value, choices, required=info.is_required())


def _credential_field(kind: Kind, name: str, editing: bool) -> FormField:
    needed = kind.credentials.required
    if editing:
        hint = ("Stored encrypted and never shown. Leave every credential empty to keep the "
                "saved ones; any value given replaces them all.")
    elif len(needed) > 1:
        hint = "Needs " + ", or ".join(" and ".join(sorted(s)) for s in needed) + "."
    else:
        hint = "Stored encrypted and never shown again."
    required = not editing and len(needed) == 1 and name in needed[0]
    return FormField(f"{kind.name}.credentials.{name}", _words(name), "password", hint,
                     required=required)


def shared_fields(*, editing: bool, current: DestinationOut | None = None,
                  ) -> tuple[tuple[FormField, ...], tuple[FormField, ...]]:
    """The fields every kind has: those above the kind's part, and those below it."""
    name = FormField("name", "Name", "text", value=current.name if current else "",
                     required=True)
    kind = FormField("kind", "Kind", "select",
                     "What receives the events: each kind has its own fields below.",
                     current.kind if current else DEFAULT_KIND, kind_choices(), required=True)
    globs_hint = ("One glob per line, such as pro.atmos.billing.*; empty sends every type"
                  + ("." if editing else " (or the kind's own default, if it says so)."))
    event_types = FormField("event_types", "Event-type filters", "textarea", globs_hint,
                            "\n".join(current.event_types) if current else "")
    description = FormField("description", "Description", "textarea",
                            value=(current.description or "") if current else "")
    headers_hint = "One Name: value per line. Values are stored encrypted and never shown again."
    if editing:
        headers_hint += " Leave empty to keep the saved headers; lines given replace them all."
    headers = FormField("headers", "Custom headers", "textarea", headers_hint)
    return (name, kind), (event_types, description, headers)


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


def form_kind(form: Mapping[str, str]) -> str:
    """The kind the form selected (not checked: the service names an unknown one)."""
    return form.get("kind", "").strip() or DEFAULT_KIND


def kind_values(form: Mapping[str, str], kind: Kind,
                ) -> tuple[str, dict[str, Any], dict[str, str]]:
    """The selected kind's URL, options and credentials: only its own fields are read
    (without the script every kind's fields are sent). An option left empty is not
    given (its default applies); an unchecked checkbox sends its hidden ``false``."""
    url = form.get(f"{kind.name}.url", form.get("url", "")).strip()
    options: dict[str, Any] = {}
    for name, info in kind.Options.model_fields.items():
        raw = form.get(f"{kind.name}.options.{name}")
        if raw is None:
            continue
        widget, _ = _widget(info.annotation)
        if widget == "checkbox":
            options[name] = raw.strip().lower() in _TRUE
        elif widget == "textarea":
            items = [line.strip() for line in raw.splitlines() if line.strip()]
            if items:
                options[name] = items
        elif raw.strip():
            options[name] = raw.strip()
    credentials = {name: value.strip() for name in kind.credentials.names
                   if (value := form.get(f"{kind.name}.credentials.{name}", "")).strip()}
    return url, options, credentials


def _invalid(exc: ValidationError) -> InvalidInputError:
    first = exc.errors()[0]
    field = ".".join(str(step) for step in first["loc"]) if first["loc"] else "name"
    message = str(first["msg"]).removeprefix("Value error, ")
    return InvalidInputError(f"{field}: {message}", field=field)


def destination_from_form(form: Mapping[str, str]) -> DestinationIn:
    """The API body of the add form; ``InvalidInputError`` names the first wrong field.
    Empty filters are not given, so that the kind's default filter applies."""
    kind = kind_named(form_kind(form))
    url, options, credentials = kind_values(form, kind)
    description = form.get("description", "").strip()
    headers = parse_headers(form.get("headers", ""))
    body: dict[str, Any] = {
        "name": form.get("name", "").strip(), "kind": kind.name, "url": url,
        "options": options, "credentials": credentials, "description": description or None,
        "headers": headers}
    event_types = split_globs(form.get("event_types", ""))
    if event_types:
        body["event_types"] = event_types
    try:
        return DestinationIn.model_validate(body)
    except ValidationError as exc:
        raise _invalid(exc) from exc


def patch_from_form(form: Mapping[str, str]) -> DestinationPatch:
    """The PATCH of the edit form: the URL, the credentials and the headers only when
    given (empty keeps them); the options whole (the form shows them all)."""
    kind = kind_named(form_kind(form))
    url, options, credentials = kind_values(form, kind)
    description = form.get("description", "").strip()
    body: dict[str, Any] = {
        "name": form.get("name", "").strip(), "kind": kind.name, "options": options,
        "description": description or None,
        "event_types": split_globs(form.get("event_types", ""))}
    if url:
        body["url"] = url
    if credentials:
        body["credentials"] = credentials
    if form.get("headers", "").strip():
        body["headers"] = parse_headers(form["headers"])
    try:
        return DestinationPatch.model_validate(body)
    except ValidationError as exc:
        raise _invalid(exc) from exc


def form_field(error: InvalidInputError, kind: str = DEFAULT_KIND) -> str:
    """The form field an error belongs to: ``headers.X-Name`` is the headers field,
    ``options.index`` of a Splunk HEC destination is ``splunk_hec.options.index``."""
    field = error.field or ""
    head = field.split(".", 1)[0]
    if head == "url":
        return f"{kind}.url"
    if head in ("options", "credentials") and "." in field:
        return f"{kind}.{field}"
    return head if head in FORM_FIELDS else "name"


def kept_values(form: Mapping[str, str]) -> dict[str, str]:
    """What a refused form shows again: everything typed but the secrets (credentials,
    and the URL of a kind whose URL is the credential) and the CSRF token."""
    kept: dict[str, str] = {}
    for key, value in form.items():
        name, _, rest = key.partition(".")
        kind = KINDS.get(name)
        if key == "csrf" or rest.startswith("credentials."):
            continue
        if rest == "url" and (kind is None or kind.url_secret):
            continue
        kept[key] = value
    return kept
