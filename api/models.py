"""Request and response bodies of the management API (contract section 5)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from auditrelay.schemas.globs import MAX_GLOBS, glob_problem
from auditrelay.schemas.status import DeliveryAttempt

#: Globs over event types: lower snake-case segments separated by dots, ``*`` anywhere.
EVENT_TYPE_GLOB = re.compile(r"^[a-z0-9_*]+(\.[a-z0-9_*]+)*$")
MASK = "********"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_WHITESPACE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _no_control(value: str) -> str:
    # PostgreSQL cannot store NUL in text at all; names are single-line labels.
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def _no_control_but_whitespace(value: str) -> str:
    if _CONTROL_BUT_WHITESPACE.search(value):
        raise ValueError("must not contain control characters other than tab and line breaks")
    return value


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_control)]
Url = Annotated[str, Field(min_length=1, max_length=2048)]
Description = Annotated[str, Field(max_length=1000), AfterValidator(_no_control_but_whitespace)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_globs(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    if len(value) > MAX_GLOBS:
        raise ValueError(f"at most {MAX_GLOBS} event type globs")
    for glob in value:
        problem = glob_problem(glob)
        if problem is not None:
            raise ValueError(f"event type glob {glob[:40]!r}{'...' if len(glob) > 40 else ''} "
                             f"is {problem}")
        if not EVENT_TYPE_GLOB.fullmatch(glob):
            raise ValueError(f"{glob!r} is not an event-type glob such as pro.atmos.billing.*")
    return value


class WorkspaceIn(_Body):
    name: Name
    plan: Annotated[str, Field(min_length=1, max_length=50), AfterValidator(_no_control)]


class WorkspaceCreated(BaseModel):
    id: str
    name: str
    plan: str
    #: Shown once; only its hash is stored.
    token: str


class TokenIn(_Body):
    name: Name


class TokenOut(BaseModel):
    """One of a workspace's API tokens as listed: never the token nor its hash."""

    id: str
    name: str
    #: The token's first 12 characters (``art_`` and 8 more); null for a token issued
    #: before tokens were listed, of which only the hash was kept.
    prefix: str | None
    created_at: datetime
    #: Updated at most once a minute.
    last_used_at: datetime | None


class TokenCreated(BaseModel):
    id: str
    name: str
    prefix: str | None
    created_at: datetime
    #: Shown this once; only its hash is stored.
    token: str


class TokenList(BaseModel):
    items: list[TokenOut]


Kind = Annotated[str, Field(min_length=1, max_length=30)]
#: A kind's options (validated by the kind: ``auditrelay.wire.kinds``).
Options = Annotated[dict[str, Any], Field(max_length=20)]
#: A kind's credentials, write-only (validated by the kind).
CredentialValues = Annotated[dict[str, str], Field(max_length=10)]


class DestinationIn(_Body):
    name: Name
    #: What the receiver is (contract section 5.1); ``webhook`` by default.
    kind: Kind = "webhook"
    url: Url
    options: Options = Field(default_factory=dict)
    credentials: CredentialValues = Field(default_factory=dict)
    description: Description | None = None
    enabled: bool = True
    event_types: list[str] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)

    _globs = field_validator("event_types")(_check_globs)


class DestinationPatch(_Body):
    name: Name | None = None
    kind: Kind | None = None
    url: Url | None = None
    #: Replaces the options whole.
    options: Options | None = None
    #: Replaces the credentials whole.
    credentials: CredentialValues | None = None
    description: Description | None = None
    enabled: bool | None = None
    event_types: list[str] | None = None
    headers: dict[str, str] | None = None

    _globs = field_validator("event_types")(_check_globs)


class DestinationOut(BaseModel):
    id: str
    workspace_id: str
    name: str
    kind: str = "webhook"
    options: dict[str, Any] = Field(default_factory=dict)
    #: The names of the credentials set; their values are never returned.
    credentials_set: list[str] = Field(default_factory=list)
    #: The URL masked (``https://hooks.slack.com/…``): it may be the credential, so it
    #: is write-only, like the secret; PATCH replaces it.
    url: str
    description: str | None
    enabled: bool
    event_types: list[str]
    #: Header names with masked values: values often carry tokens.
    headers: dict[str, str]
    status: Literal["active", "disabled"]
    disabled_reason: str | None
    last_delivery_at: datetime | None = None
    last_delivery_ok: bool | None = None
    last_error: str | None = None
    created_at: datetime
    updated_at: datetime


class DestinationCreated(DestinationOut):
    #: The signing secret of a webhook, shown this once; null for kinds that are not
    #: signed (their receivers check the credentials instead).
    secret: str | None


class DestinationList(BaseModel):
    items: list[DestinationOut]


class DeliveryList(BaseModel):
    items: list[DeliveryAttempt]


class SecretOut(BaseModel):
    secret: str


class TestResult(BaseModel):
    delivered: bool
    status_code: int | None
    latency_ms: int
    error: str | None
    #: The receiver's verdict in words ("Splunk HEC accepted the event").
    message: str


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


class EventPage(BaseModel):
    """One page of a workspace's archived events, newest first."""

    #: The CloudEvents envelopes exactly as produced.
    items: list[dict[str, Any]]
    #: Pass as ``cursor`` to get the next page; null on the last page.
    next_cursor: str | None
