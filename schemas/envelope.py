"""Pydantic models of one audit event: the CloudEvents v1.0 envelope and its ``data``.

These models are the reference definition of contract section 1: the JSON
Schema files in ``schemas/json`` are exported from them, and
:func:`auditrelay.schemas.codec.parse_event` validates every consumed event with them.
The producer's fast path (:mod:`auditrelay.schemas.builder`) enforces the same rules
without building models; tests hold the two to the same verdicts and bytes.

Rules that depend on settings (the type prefix, whether unknown types pass, the
source base URL) come from an :class:`EventRules` passed as validation context;
without one the defaults apply. Envelope-level rule violations raise
:class:`~auditrelay.schemas.errors.InvalidEventError` naming the attribute; field-level ones
are pydantic errors that :mod:`auditrelay.schemas.codec` translates into the same error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from auditrelay.schemas.catalogue import (
    DEFAULT_CATALOGUE,
    MAX_NAME_LENGTH,
    SNAKE_PATTERN,
    Catalogue,
)
from auditrelay.schemas.errors import InvalidEventError
from auditrelay.schemas.ids import EVENT_ID_PATTERN, REFERENCE_ID_PATTERN, WORKSPACE_ID_PATTERN
from auditrelay.schemas.jsonvalue import check_json

SPECVERSION: Final = "1.0"
DATACONTENTTYPE: Final = "application/json"
#: Media type of one structured-mode event (Kafka ``content-type`` header).
EVENT_CONTENT_TYPE: Final = "application/cloudevents+json"
#: Largest serialised event, in bytes (contract section 1).
MAX_EVENT_BYTES: Final = 64 * 1024
MAX_DESCRIPTION_LENGTH: Final = 4096
DEFAULT_TYPE_PREFIX: Final = "pro.atmos"

ActorType = Literal["user", "service_account", "api_key", "system"]
ACTOR_TYPES: Final[frozenset[str]] = frozenset(("user", "service_account", "api_key", "system"))

#: CloudEvents v1.0: attribute names are lower-case a-z0-9; the spec recommends at
#: most 20 characters, which auditrelay enforces for extension attributes.
EXTENSION_NAME_PATTERN: Final = r"^[a-z0-9]{1,20}$"
EXTENSION_NAME_RE: Final = re.compile(EXTENSION_NAME_PATTERN)
#: Attributes the spec defines (``data`` and ``data_base64`` are members, not attributes).
STANDARD_ATTRIBUTES: Final = frozenset((
    "specversion", "id", "source", "type", "time", "subject", "datacontenttype",
    "dataschema", "workspaceid", "data", "data_base64",
))

#: RFC 3339 in UTC only: ``Z`` or ``+00:00``, optional fraction (up to nanoseconds).
TIME_PATTERN: Final = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)$"
_TIME_RE: Final = re.compile(TIME_PATTERN)
#: ``{base_url}/workspaces/{workspace_id}``; base_url is http(s) without query or fragment.
SOURCE_PATTERN: Final = r"^https?://[^\s/?#]+(/[^\s?#]*)?/workspaces/ws_[a-z0-9]{1,40}$"

ReferenceId = Annotated[str, Field(pattern=REFERENCE_ID_PATTERN, max_length=256)]
SnakeName = Annotated[str, Field(pattern=SNAKE_PATTERN, max_length=MAX_NAME_LENGTH)]


@dataclass(frozen=True)
class EventRules:
    """The setting-dependent part of validation."""

    type_prefix: str = DEFAULT_TYPE_PREFIX
    allow_unknown_types: bool = False
    catalogue: Catalogue = field(default=DEFAULT_CATALOGUE)
    #: When set, ``source`` must be exactly ``{source_base_url}/workspaces/{workspaceid}``.
    source_base_url: str | None = None


DEFAULT_RULES: Final = EventRules()


def format_time(value: datetime) -> str:
    """The canonical wire form: UTC, millisecond precision, ``Z``."""
    return f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}Z"


def _check_utc(value: datetime) -> datetime:
    offset = value.utcoffset()
    if offset is None:
        raise ValueError("time must be timezone-aware UTC (got a naive datetime)")
    if offset != timedelta(0):
        raise ValueError("time must be in UTC (offset +00:00)")
    return value.astimezone(UTC)


def parse_time(value: object) -> datetime:
    """An RFC 3339 UTC string or an aware UTC datetime, as an aware UTC datetime."""
    if isinstance(value, datetime):
        return _check_utc(value)
    if not isinstance(value, str) or _TIME_RE.fullmatch(value) is None:
        raise ValueError("time must be an RFC 3339 UTC timestamp like 2026-11-25T10:30:00.000Z")
    text = value.replace("Z", "+00:00")
    head, dot, tail = text.partition(".")
    if dot:  # fromisoformat takes at most microseconds; nanoseconds are truncated
        digits, offset = tail[:-6], tail[-6:]
        text = f"{head}.{digits[:6].ljust(6, '0')}{offset}"
    try:
        return _check_utc(datetime.fromisoformat(text))
    except ValueError as exc:
        raise ValueError(f"time is not a valid date and time: {exc}") from None


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Actor(_Part):
    """Who did it."""

    id: ReferenceId
    type: ActorType


class Action(_Part):
    """What was done; must agree with the event's ``type``."""

    category: SnakeName
    action: SnakeName


class Target(_Part):
    """What it was done to."""

    type: SnakeName
    id: ReferenceId


class EventData(_Part):
    """The ``data`` member: always these five keys (``target`` and ``description`` may be null)."""

    actor: Actor
    action: Action
    target: Target | None = None
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION_LENGTH)] | None = None
    metadata: dict[str, JsonValue] = Field(default_factory=dict)

    @field_validator("metadata")
    @classmethod
    def _json_only(cls, value: dict[str, JsonValue]) -> dict[str, JsonValue]:
        problem = check_json(value)
        if problem is not None:
            raise ValueError(problem)
        return value


def _extension_schema(schema: dict[str, Any]) -> None:
    # Extension attributes: spec-conformant names, scalar values (no objects).
    schema["propertyNames"] = {"pattern": EXTENSION_NAME_PATTERN}
    schema["additionalProperties"] = {"type": ["string", "integer", "boolean"]}
    schema["description"] = (
        "One audit event: a CloudEvents v1.0 JSON object (structured mode), at most "
        f"{MAX_EVENT_BYTES} bytes serialised. Extension attributes: names of 1-20 "
        "lower-case letters or digits, string, integer or boolean values."
    )


class AuditEvent(BaseModel):
    """One audit event, as written to ``audit.events``."""

    model_config = ConfigDict(
        extra="allow", frozen=True, strict=True, json_schema_extra=_extension_schema,
        title="AuditEvent",
    )

    specversion: Literal["1.0"]
    id: Annotated[str, Field(pattern=EVENT_ID_PATTERN)]
    source: Annotated[str, Field(pattern=SOURCE_PATTERN, max_length=2048)]
    type: Annotated[str, Field(min_length=1, max_length=256)]
    time: Annotated[datetime, Field(json_schema_extra={"type": "string", "format": "date-time",
                                                       "pattern": TIME_PATTERN})]
    subject: ReferenceId | None = None
    datacontenttype: Literal["application/json"] = DATACONTENTTYPE
    dataschema: Annotated[str, Field(min_length=1, max_length=2048)] | None = None
    workspaceid: Annotated[str, Field(pattern=WORKSPACE_ID_PATTERN)]
    data: EventData

    @field_validator("time", mode="before")
    @classmethod
    def _rfc3339_utc(cls, value: object) -> datetime:
        return parse_time(value)

    @field_serializer("time")
    def _time_wire(self, value: datetime) -> str:
        return format_time(value)

    @model_validator(mode="after")
    def _contract(self, info: ValidationInfo) -> AuditEvent:
        rules = info.context if isinstance(info.context, EventRules) else DEFAULT_RULES
        check_envelope_rules(self, rules)
        return self

    @property
    def extensions(self) -> dict[str, Any]:
        """Extension attributes other than ``workspaceid``."""
        return dict(self.model_extra or {})


def check_envelope_rules(event: AuditEvent, rules: EventRules) -> None:
    """The cross-field rules of contract section 1; raises InvalidEventError."""
    action = event.data.action
    expected = f"{rules.type_prefix}.{action.category}.{action.action}"
    if event.type != expected:
        raise InvalidEventError(
            f"type {event.type!r} does not match data.action (expected {expected!r})",
            field="type",
        )
    if not rules.allow_unknown_types and rules.catalogue.get(action.category,
                                                             action.action) is None:
        raise InvalidEventError(f"unknown event type {event.type!r}: not in the catalogue",
                                field="type")
    suffix = f"/workspaces/{event.workspaceid}"
    if not event.source.endswith(suffix):
        raise InvalidEventError(f"source must end with {suffix!r}", field="source")
    if rules.source_base_url is not None and event.source != rules.source_base_url + suffix:
        raise InvalidEventError(f"source must be {rules.source_base_url + suffix!r}",
                                field="source")
    for name, value in (event.model_extra or {}).items():
        if name in STANDARD_ATTRIBUTES or EXTENSION_NAME_RE.fullmatch(name) is None:
            raise InvalidEventError(
                f"extension attribute name {name!r} must be 1-20 lower-case letters or digits",
                field=name,
            )
        if isinstance(value, float) or not isinstance(value, str | int | bool):
            raise InvalidEventError(
                f"extension attribute {name!r} must be a string, integer or boolean", field=name
            )
