"""Bytes in, bytes out: the canonical serialisation of an event and ``parse_event``.

The canonical form is compact JSON (no spaces), UTF-8 without ``\\u`` escapes
for non-ASCII, attributes in a fixed order (specversion, id, source, type,
time, subject, datacontenttype, dataschema, workspaceid, extensions, data) and
``data`` always with its five keys. The producer's fast path writes exactly
these bytes; consumers never need them to, since they pass bytes through.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from json.encoder import encode_basestring
from typing import Any, Final

from pydantic import ValidationError

from auditrelay.schemas.envelope import (
    DEFAULT_RULES,
    MAX_EVENT_BYTES,
    AuditEvent,
    EventRules,
    format_time,
)
from auditrelay.schemas.errors import InvalidEventError

#: The one JSON encoder of the canonical form (the fast path uses it too).
JSON_ENCODER: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"),
                                       allow_nan=False)


def _refuse(value: object) -> object:
    raise TypeError(f"a {type(value).__name__} is not JSON-serialisable")


_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
# The C encoder of json, built once: JSONEncoder.encode rebuilds it on every call.
# No circular-reference markers: callers pass values that check_json (depth-limited)
# or pydantic already vetted. Same options, hence the same text, as JSON_ENCODER.
_C_ENCODE: Final = None if _c_make_encoder is None else _c_make_encoder(
    None, _refuse, encode_basestring, None, ":", ",", False, False, False)


def encode_json(value: object) -> str:
    """Canonical JSON text of a vetted value; ValueError for NaN, TypeError for non-JSON."""
    if _C_ENCODE is None:
        text: str = JSON_ENCODER.encode(value)
        return text
    return "".join(_C_ENCODE(value, 0))


def parse_event(raw: bytes | bytearray | memoryview | str,
                rules: EventRules = DEFAULT_RULES) -> AuditEvent:
    """Validate one serialised event; anything malformed raises InvalidEventError."""
    size = len(raw.encode("utf-8")) if isinstance(raw, str) else len(raw)
    if size > MAX_EVENT_BYTES:
        raise InvalidEventError(f"event is {size} bytes, more than {MAX_EVENT_BYTES}")
    try:
        return AuditEvent.model_validate_json(bytes(raw) if isinstance(raw, memoryview) else raw,
                                              context=rules)
    except ValidationError as exc:
        raise _translate(exc) from exc


def validate_event(value: Mapping[str, Any], rules: EventRules = DEFAULT_RULES) -> AuditEvent:
    """Validate an event given as Python objects (``time`` may be an aware datetime)."""
    try:
        event = AuditEvent.model_validate(dict(value), context=rules)
    except ValidationError as exc:
        raise _translate(exc) from exc
    encode_event(event)  # enforces the size limit and UTF-8 encodability
    return event


def event_to_dict(event: AuditEvent) -> dict[str, Any]:
    """The event as JSON-ready objects, in canonical order."""
    out: dict[str, Any] = {
        "specversion": event.specversion,
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "time": format_time(event.time),
    }
    if event.subject is not None:
        out["subject"] = event.subject
    out["datacontenttype"] = event.datacontenttype
    if event.dataschema is not None:
        out["dataschema"] = event.dataschema
    out["workspaceid"] = event.workspaceid
    out.update(event.model_extra or {})
    data = event.data
    target = data.target
    out["data"] = {
        "actor": {"id": data.actor.id, "type": data.actor.type},
        "action": {"category": data.action.category, "action": data.action.action},
        "target": None if target is None else {"type": target.type, "id": target.id},
        "description": data.description,
        "metadata": data.metadata,
    }
    return out


def encode_event(event: AuditEvent) -> bytes:
    """The canonical bytes of an event; refuses events over the size limit."""
    return encode_checked(encode_json(event_to_dict(event)))


def encode_checked(text: str) -> bytes:
    """UTF-8 bytes of a serialised event, within the size limit."""
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate in some string
        raise InvalidEventError(f"event text is not valid Unicode: {exc.reason}",
                                field="data") from exc
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEventError(
            f"data.metadata: the event is {len(raw)} bytes serialised, more than "
            f"{MAX_EVENT_BYTES}",
            field="data.metadata",
        )
    return raw


def _translate(exc: ValidationError) -> InvalidEventError:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0] if errors else {"loc": (), "msg": str(exc)}
    field = ".".join(str(part) for part in first["loc"]) or None
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    where = f"{field}: " if field else ""
    if field is not None and field.startswith("data.metadata."):
        field = "data.metadata"  # keys below it are the caller's data, not contract fields
    return InvalidEventError(f"invalid event: {where}{first['msg']}{more}", field=field)
