"""The fast path: build, validate and serialise one event without building models.

Validating every event through pydantic models costs tens of microseconds; a
service emitting at volume cannot afford that. :class:`EventBuilder` checks the
same rules as :class:`~auditrelay.schemas.envelope.AuditEvent` directly on the arguments
(compiled regexes, catalogue dict lookups, the :mod:`auditrelay.schemas.jsonvalue` check),
caches the verdicts and JSON fragments of values that repeat (workspace, type,
actor), and concatenates the canonical bytes of :mod:`auditrelay.schemas.codec`.
tests/unit/schemas/test_builder.py holds both paths to the same verdicts and
the same bytes.
"""

from __future__ import annotations

import re
import time as _time
from collections.abc import Mapping
from datetime import datetime
from json.encoder import encode_basestring
from typing import Any, Final, NamedTuple

from auditrelay.schemas.catalogue import DEFAULT_CATALOGUE, PREFIX_RE, Catalogue, is_snake
from auditrelay.schemas.codec import encode_checked, encode_json
from auditrelay.schemas.envelope import (
    ACTOR_TYPES,
    DEFAULT_TYPE_PREFIX,
    EVENT_CONTENT_TYPE,
    MAX_DESCRIPTION_LENGTH,
    SOURCE_PATTERN,
    Actor,
    Target,
    format_time,
    parse_time,
)
from auditrelay.schemas.errors import InvalidEventError
from auditrelay.schemas.ids import EVENT_ID_PREFIX, REFERENCE_ID_RE, WORKSPACE_ID_RE, UlidSource
from auditrelay.schemas.jsonvalue import check_json

_CACHE_LIMIT: Final = 4096
SOURCE_RE: Final = re.compile(SOURCE_PATTERN)
_FLAT_SCALARS: Final = frozenset((str, int, float, bool, type(None)))
_CONTENT_TYPE_HEADER: Final = ("content-type", EVENT_CONTENT_TYPE.encode())

ActorLike = Actor | Mapping[str, Any]
TargetLike = Target | Mapping[str, Any]


class EncodedEvent(NamedTuple):
    """One event ready for Kafka: key, value and headers of the record."""

    id: str
    type: str
    workspace_id: str
    key: bytes
    value: bytes
    headers: list[tuple[str, str | bytes | None]]


def _reference(value: object, field: str) -> str:
    if not isinstance(value, str) or REFERENCE_ID_RE.fullmatch(value) is None:
        raise InvalidEventError(f"{field} must be 1-256 printable characters", field=field)
    return value


def _actor_fragment(actor: object) -> str:
    if actor is None:
        raise InvalidEventError("data.actor is required: who did it", field="data.actor")
    if isinstance(actor, Actor):
        actor_id, actor_type = actor.id, actor.type
    elif isinstance(actor, Mapping):
        if set(actor) != {"id", "type"}:
            raise InvalidEventError("data.actor needs exactly the keys id and type",
                                    field="data.actor")
        actor_id = _reference(actor["id"], "data.actor.id")
        actor_type = actor["type"]
        if actor_type not in ACTOR_TYPES:
            raise InvalidEventError(
                f"data.actor.type must be one of {', '.join(sorted(ACTOR_TYPES))}",
                field="data.actor.type",
            )
    else:
        raise InvalidEventError("data.actor must be an Actor or a mapping", field="data.actor")
    return f'{{"id":{encode_basestring(actor_id)},"type":"{actor_type}"}}'


def _target_fragment(target: object) -> str:
    if target is None:
        return "null"
    if isinstance(target, Target):
        target_type, target_id = target.type, target.id
    elif isinstance(target, Mapping):
        if set(target) != {"type", "id"}:
            raise InvalidEventError("data.target needs exactly the keys type and id",
                                    field="data.target")
        target_type = target["type"]
        if not is_snake(target_type):
            raise InvalidEventError("data.target.type must be lower snake case",
                                    field="data.target.type")
        target_id = _reference(target["id"], "data.target.id")
    else:
        raise InvalidEventError("data.target must be a Target, a mapping or None",
                                field="data.target")
    return f'{{"type":"{target_type}","id":{encode_basestring(target_id)}}}'


def _nested_metadata(metadata: dict[Any, Any]) -> str:
    problem = check_json(metadata)
    if problem is not None:
        raise InvalidEventError(f"data.metadata is not plain JSON: {problem}",
                                field="data.metadata")
    return encode_json(metadata)


class EventBuilder:
    """Builds canonical, validated events for one configuration (prefix, base URL, catalogue).

    Thread-safe: caches are plain dicts whose entries are immutable and
    idempotent to recompute, and ids come from a locked :class:`UlidSource`.
    """

    def __init__(self, *, type_prefix: str = DEFAULT_TYPE_PREFIX,
                 source_base_url: str = "https://app.atmos.pro",
                 catalogue: Catalogue = DEFAULT_CATALOGUE,
                 allow_unknown_types: bool = False) -> None:
        self.type_prefix = type_prefix
        self.source_base_url = source_base_url.rstrip("/")
        self.catalogue = catalogue
        self.allow_unknown_types = allow_unknown_types
        self._ids = UlidSource()
        self._workspaces: dict[str, tuple[str, bytes]] = {}
        self._types: dict[tuple[str, str], tuple[str, str]] = {}
        self._actors: dict[tuple[str, str], str] = {}
        self._second: tuple[int, str] = (-1, "")  # one attribute, so threads see a pair
        if PREFIX_RE.fullmatch(type_prefix) is None:
            raise ValueError(f"type prefix {type_prefix!r} is not dot-separated snake case")
        if SOURCE_RE.fullmatch(f"{self.source_base_url}/workspaces/ws_x") is None:
            raise ValueError(f"source base URL {source_base_url!r} is not an http(s) URL "
                             "without query or fragment")

    def build(self, workspace_id: str, category: str, action: str, *,
              actor: ActorLike | None = None, target: TargetLike | None = None,
              subject: str | None = None, description: str | None = None,
              metadata: Mapping[str, Any] | None = None,
              time: datetime | None = None) -> EncodedEvent:
        """One event, or InvalidEventError naming the envelope field that is wrong."""
        try:
            ws = self._workspaces.get(workspace_id)
            type_parts = self._types.get((category, action))
        except TypeError:  # an unhashable argument: let the checks below name it
            ws = type_parts = None
        if ws is None:
            ws = self._workspace(workspace_id)
        source_head, key = ws
        if type_parts is None:
            type_parts = self._type(category, action)
        type_name, type_head = type_parts

        if type(actor) is Actor:
            actor_key = (actor.id, actor.type)
            actor_json = self._actors.get(actor_key)
            if actor_json is None:
                actor_json = _actor_fragment(actor)
                self._remember(self._actors, actor_key, actor_json)
        else:
            actor_json = _actor_fragment(actor)

        target_json = "null" if target is None else _target_fragment(target)

        if description is None:
            description_json = "null"
        elif isinstance(description, str) and len(description) <= MAX_DESCRIPTION_LENGTH:
            description_json = encode_basestring(description)
        else:
            raise InvalidEventError(
                f"data.description must be a string of at most {MAX_DESCRIPTION_LENGTH} "
                "characters, or None", field="data.description")

        if not metadata:
            if metadata is not None and not isinstance(metadata, Mapping):
                raise InvalidEventError("data.metadata must be a mapping",
                                        field="data.metadata")
            metadata_json = "{}"
        else:
            metadata_json = self._metadata(metadata)

        if subject is None:
            subject_json = ""
        else:
            subject_json = ',"subject":' + encode_basestring(_reference(subject, "subject"))

        if time is None:
            ms, ulid = self._ids.new()
            time_text = self._time_text(ms)
        else:
            time_text = self._given_time(time)
            ulid = self._ids.new()[1]
        event_id = EVENT_ID_PREFIX + ulid

        text = (
            f'{{"specversion":"1.0","id":"{event_id}","source":{source_head}'
            f'"type":"{type_name}","time":"{time_text}"{subject_json},'
            f'"datacontenttype":"application/json","workspaceid":"{workspace_id}",'
            f'"data":{{"actor":{actor_json},{type_head}'
            f'"target":{target_json},"description":{description_json},'
            f'"metadata":{metadata_json}}}}}'
        )
        return EncodedEvent(event_id, type_name, workspace_id, key, encode_checked(text), [
            ("ce_id", event_id), ("ce_type", type_name), ("ce_workspaceid", workspace_id),
            _CONTENT_TYPE_HEADER,
        ])

    # -- cached validation of repeating values ------------------------------------------------

    def _workspace(self, workspace_id: object) -> tuple[str, bytes]:
        if not isinstance(workspace_id, str) or WORKSPACE_ID_RE.fullmatch(workspace_id) is None:
            raise InvalidEventError(
                "workspaceid must be 'ws_' followed by 1-40 lower-case letters or digits",
                field="workspaceid",
            )
        source = f"{self.source_base_url}/workspaces/{workspace_id}"
        entry = (encode_basestring(source) + ",", workspace_id.encode("ascii"))
        self._remember(self._workspaces, workspace_id, entry)
        return entry

    def _type(self, category: object, action: object) -> tuple[str, str]:
        if not is_snake(category):
            raise InvalidEventError("data.action.category must be lower snake case",
                                    field="data.action.category")
        if not is_snake(action):
            raise InvalidEventError("data.action.action must be lower snake case",
                                    field="data.action.action")
        type_name = f"{self.type_prefix}.{category}.{action}"
        if not self.allow_unknown_types and self.catalogue.get(category, action) is None:
            raise InvalidEventError(f"unknown event type {type_name!r}: not in the catalogue",
                                    field="type")
        entry = (type_name, f'"action":{{"category":"{category}","action":"{action}"}},')
        self._remember(self._types, (category, action), entry)
        return entry

    @staticmethod
    def _metadata(metadata: object) -> str:
        if type(metadata) is dict:
            # The common case, a flat object of scalars, is checked inline; floats are
            # left to the encoder, which refuses NaN and infinities (allow_nan=False).
            for key, value in metadata.items():
                if type(key) is not str or type(value) not in _FLAT_SCALARS:
                    return _nested_metadata(metadata)
            try:
                return encode_json(metadata)
            except ValueError as exc:
                raise InvalidEventError(f"data.metadata is not plain JSON: {exc}",
                                        field="data.metadata") from None
        if not isinstance(metadata, Mapping):
            raise InvalidEventError("data.metadata must be a mapping", field="data.metadata")
        return _nested_metadata(dict(metadata))

    def _time_text(self, ms: int) -> str:
        second, milli = divmod(ms, 1000)
        cached_second, text = self._second
        if second != cached_second:
            text = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(second))
            self._second = (second, text)
        return f"{text}.{milli:03d}Z"

    @staticmethod
    def _given_time(value: object) -> str:
        try:
            return format_time(parse_time(value))
        except ValueError as exc:
            raise InvalidEventError(str(exc), field="time") from None

    @staticmethod
    def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()  # bounded memory; a refill costs one validation per value
        cache[key] = value
