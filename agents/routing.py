"""The router's pure logic: check records, group events into batches, dead-letter the rest.

No Kafka and no clock beyond what is passed in; ``auditrelay.agents.router`` feeds a
:class:`BatchBuffer` the consumed (aiokafka) records of every read and produces what it
closes: a destination's batch as soon as it is full, a partial one once its oldest
event is a window old. ``plan_round`` batches a whole round at once.

The per-event path is kept minimal on purpose (the pipeline target is 20 000
events/s on two cores shared with the broker): header lookups, a few cached
validity verdicts, substring checks on the bytes, one registry lookup, and a
bytes join per batch. Valid events produced by ``auditrelay.schemas.builder`` (compact,
canonical JSON) are never parsed. Only a record that fails the cheap checks is
parsed, with :func:`auditrelay.schemas.codec.parse_event`, either to name precisely what is
wrong with it, or to accept it after all when it is valid JSON written by some
other producer in a non-compact form.
"""

from __future__ import annotations

import heapq
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, Protocol

from auditrelay.schemas.batches import (
    MAX_DETAIL_CHARS,
    REASON_MALFORMED,
    BatchMeta,
    MalformedInput,
    batch_body,
    malformed_record_headers,
)
from auditrelay.schemas.codec import parse_event
from auditrelay.schemas.destinations import DestinationConfig
from auditrelay.schemas.envelope import MAX_EVENT_BYTES
from auditrelay.schemas.errors import InvalidEventError
from auditrelay.schemas.ids import EVENT_ID_RE, WORKSPACE_ID_RE
from auditrelay.schemas.topics import TopicNames
from auditrelay.wire.signing import new_batch_id

__all__ = [
    "MAX_BATCH_BYTES",
    "BatchBuffer",
    "EventFacts",
    "OutRecord",
    "RecordLike",
    "RoundPlan",
    "batch_deadline",
    "check_record",
    "malformed_record",
    "plan_round",
]

#: Most bytes of one batch body. A batch record must fit the producer's request
#: limit and the broker's ``message.max.bytes`` (both about 1 MB by default), so a
#: batch of large events is cut before 100 events. One event (<= 64 KiB) always fits.
MAX_BATCH_BYTES: Final = 900 * 1024

#: Lower snake-case labels separated by dots, as ``auditrelay.schemas.catalogue`` builds types.
_TYPE_CHARS: Final = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_.")
_CACHE_LIMIT: Final = 4096
#: ``EVENT_ID_RE`` on the header's bytes (the pattern is ASCII), without a decode first.
_EVENT_ID_BYTES: Final = re.compile(EVENT_ID_RE.pattern.encode("ascii"))
_NO_HEADERS: Final[dict[str, Any]] = {}

Matching = Callable[[str, str], Sequence[DestinationConfig]]
HeaderPairs = Sequence[tuple[str, bytes | str | None]]


class RecordLike(Protocol):
    """What the router reads of one consumed record (an aiokafka ``ConsumerRecord`` fits)."""

    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Any: ...  # pairs or a mapping of name to bytes
    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int | None: ...  # milliseconds since the epoch, as Kafka gives it


class EventFacts(NamedTuple):
    """What routing needs of a valid event, all from its key and headers."""

    workspace_id: str
    event_type: str
    event_id: str


class OutRecord(NamedTuple):
    """One record to produce: a batch for a destination, or a dead letter."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: HeaderPairs
    #: The batch's headers as an object; None for malformed input on its way to the DLQ.
    meta: BatchMeta | None = None


# Verdicts on values that repeat (workspace ids, types), so each is checked once.
_good_workspaces: dict[bytes, str] = {}
_good_types: dict[bytes, str] = {}


def _remember(cache: dict[bytes, str], raw: bytes, text: str) -> str:
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[raw] = text
    return text


def _show(raw: bytes, limit: int = 60) -> str:
    return repr(raw[:limit].decode("utf-8", errors="replace"))


def _workspace(key: bytes | None, header: bytes | None) -> str:
    """The workspace id of a record, or raise ValueError with the reason."""
    if not key:
        raise ValueError("the record has no key (it must be the workspace id)")
    if header is None:
        raise ValueError("header ce_workspaceid is missing")
    if header != key:
        raise ValueError(f"the record key {_show(key)} differs from header ce_workspaceid "
                         f"{_show(header)}")
    known = _good_workspaces.get(key)
    if known is not None:
        return known
    text = key.decode("ascii", errors="replace")
    if WORKSPACE_ID_RE.fullmatch(text) is None:
        raise ValueError(f"header ce_workspaceid {_show(key)} is not ws_ + 1-40 lower-case "
                         "letters or digits")
    return _remember(_good_workspaces, key, text)


def _event_type(header: bytes | None) -> str:
    if header is None:
        raise ValueError("header ce_type is missing")
    known = _good_types.get(header)
    if known is not None:
        return known
    if (not header or not _TYPE_CHARS.issuperset(header) or header[:1] == b"."
            or header[-1:] == b"." or b".." in header or len(header) > 255):
        raise ValueError(f"header ce_type {_show(header)} is not a dotted lower snake-case "
                         "event type")
    return _remember(_good_types, header, header.decode("ascii"))


def _event_id(header: bytes | None) -> str:
    if header is None:
        raise ValueError("header ce_id is missing")
    if _EVENT_ID_BYTES.fullmatch(header) is None:
        raise ValueError(f"header ce_id {_show(header)} is not aud_ + a ULID")
    return header.decode("ascii")


def _as_bytes(value: bytes | str | None) -> bytes | None:
    return value.encode("utf-8", errors="replace") if isinstance(value, str) else value


def check_record(key: bytes | None, value: bytes | None, headers: Any) -> EventFacts | str:
    """Routing facts of one ``audit.events`` record, or the reason it is malformed.

    Checks: key = workspace id = header ``ce_workspaceid``; ``ce_id`` is ``aud_`` +
    ULID; ``ce_type`` is a dotted snake-case type; the value is at most 64 KiB and
    agrees with the headers. Agreement is checked cheaply on canonical bytes (a
    JSON object containing ``"id":"<ce_id>"``, ``"type":"<ce_type>"`` and
    ``"workspaceid":"<ws>"``); a value failing that is parsed, and accepted only
    if it is a valid event whose attributes equal the headers.
    """
    # One C-level dict of the headers (the last of a repeated name wins), then lookups.
    found = dict(headers) if headers else _NO_HEADERS
    # Any, not bytes | None: the checks below refuse anything but bytes before use.
    ce_id: Any = found.get("ce_id")
    ce_type: Any = found.get("ce_type")
    ce_ws: Any = found.get("ce_workspaceid")
    if ce_id.__class__ is str or ce_type.__class__ is str or ce_ws.__class__ is str:
        ce_id, ce_type, ce_ws = _as_bytes(ce_id), _as_bytes(ce_type), _as_bytes(ce_ws)
    try:
        workspace_id = _workspace(key, ce_ws)
        event_id = _event_id(ce_id)
        event_type = _event_type(ce_type)
    except ValueError as exc:
        return str(exc)
    if value is None:
        return "the record has no value"
    # The helpers above refused missing headers: all three are bytes here.
    if (len(value) <= MAX_EVENT_BYTES and value[:1] == b"{" and value[-1:] == b"}"
            and b'"id":"' + ce_id + b'"' in value
            and b'"type":"' + ce_type + b'"' in value
            and b'"workspaceid":"' + ce_ws + b'"' in value):
        return EventFacts(workspace_id, event_type, event_id)
    return _slow_check(value, EventFacts(workspace_id, event_type, event_id))


def _slow_check(value: bytes, facts: EventFacts) -> EventFacts | str:
    """Parse a value the cheap checks could not vouch for."""
    try:
        event = parse_event(value)
    except InvalidEventError as exc:
        return str(exc)
    for header, attribute, expected, actual in (
            ("ce_id", "id", facts.event_id, event.id),
            ("ce_type", "type", facts.event_type, event.type),
            ("ce_workspaceid", "workspaceid", facts.workspace_id, event.workspaceid)):
        if actual != expected:
            return (f"header {header} {expected!r} does not match the event's {attribute} "
                    f"{actual[:60]!r}")
    return facts


def _header_pairs(headers: Any) -> HeaderPairs:
    if not headers:
        return []
    return list(headers.items() if isinstance(headers, Mapping) else headers)


def malformed_record(record: RecordLike, reason: str, topics: TopicNames) -> OutRecord:
    """The ``audit.dlq`` record of a malformed input: its key, value and headers untouched,
    plus ``ar_reason=malformed_event``, ``ar_detail`` and where it was read."""
    meta = MalformedInput(reason[:MAX_DETAIL_CHARS], record.topic, record.partition,
                          record.offset, REASON_MALFORMED)
    return OutRecord(topics.dlq, record.key, record.value,
                     malformed_record_headers(_header_pairs(record.headers), meta))


class _OpenBatch:
    """A batch being filled for one destination."""

    __slots__ = ("config", "deadline", "events", "first_ms", "firsts", "open", "part", "size")

    def __init__(self, config: DestinationConfig, first_ms: int, deadline: float) -> None:
        self.config = config
        self.events: list[bytes] = []
        self.first_ms = first_ms
        self.deadline = deadline
        self.size = 2  # the brackets
        #: Per input partition (topic, partition) the offset of its first event here.
        self.firsts: dict[tuple[str, int], int] = {}
        #: The input partition of the last event added (to skip the dict most of the time).
        self.part: tuple[str, int] | None = None
        self.open = True

    def close(self, topics: TopicNames) -> OutRecord:
        self.open = False
        config = self.config
        meta = BatchMeta(batch_id=new_batch_id(), destination_id=config.id,
                         workspace_id=config.workspace_id, events=len(self.events),
                         first_event_ms=self.first_ms)
        return OutRecord(topics.deliveries, config.id.encode(),
                         batch_body(self.events), meta.headers(), meta)


@dataclass
class RoundPlan:
    """What one round of input becomes."""

    #: Batches in order per destination, then dead letters in input order.
    records: list[OutRecord] = field(default_factory=list)
    events: int = 0
    #: Event deliveries planned (an event matching two destinations counts twice).
    routed: int = 0
    #: Valid events no enabled, entitled destination wanted.
    unrouted: int = 0
    malformed: int = 0

    @property
    def batches(self) -> list[OutRecord]:
        return [r for r in self.records if r.meta is not None and not r.meta.reason]

    @property
    def dead_letters(self) -> list[OutRecord]:
        return [r for r in self.records if r.meta is None or r.meta.reason]


def batch_deadline(now: float, first_ms: int, window: float) -> float:
    """When a partial batch is due, in epoch seconds, given its oldest event's Kafka timestamp.

    ``window`` after that event was produced, so that no event waits longer than
    the window even when it reached the router late; but never later than
    ``window`` from ``now`` (a producer clock ahead of ours) nor before ``now``.
    """
    return min(now + window, max(now, first_ms / 1000 + window))


class BatchBuffer:
    """Open batches per destination, kept across reads: the router's state.

    :meth:`add` checks and routes input records: events join their destinations'
    open batches, and a batch is closed the moment it is full (``max_events``
    events, or the next event would take its body over ``max_bytes``); malformed
    records become dead letters at once. A batch that is not full is closed by
    :meth:`close_due` once its oldest event is ``window`` seconds old
    (:func:`batch_deadline`), or by :meth:`close_all`. :meth:`take` hands out what
    was closed, batches in order per destination, then dead letters.

    :meth:`held` says, per input partition, the lowest offset still in an open
    batch: the input must not be committed past it, as those events are not
    produced yet. Counters (``plan``) add up until the caller resets them.
    No Kafka, no clock: ``now`` (epoch seconds) is passed in.
    """

    def __init__(self, matching: Matching, topics: TopicNames, *, max_events: int = 100,
                 max_bytes: int = MAX_BATCH_BYTES, window: float = 1.0) -> None:
        self._matching = matching
        self._topics = topics
        self._max_events = max_events
        self._max_bytes = max_bytes
        self.window = window
        self._open: dict[str, _OpenBatch] = {}
        #: Per input partition, the open batches holding its events, each with the offset
        #: of its first one there, in the order they took one: a partition's events come
        #: in offset order, so the first entry holds its lowest (``held`` in O(partitions);
        #: scanning every open batch at every read cost the router a sixth of its CPU with
        #: 1 000 destinations).
        self._holders: dict[tuple[str, int], dict[_OpenBatch, int]] = {}
        #: (deadline, sequence, batch) of every batch opened; closed ones are skipped.
        self._deadlines: list[tuple[float, int, _OpenBatch]] = []
        self._sequence = 0
        self._closed: list[OutRecord] = []
        self._dead: list[OutRecord] = []
        #: Counts of what was added (its ``records`` stay empty); reset by the caller.
        self.plan = RoundPlan()
        #: Index in the last :meth:`add`'s records of the one that raised (a bug): where to
        #: resume, since those before it are in batches already.
        self.failed_at = 0

    def __len__(self) -> int:
        """Open batches."""
        return len(self._open)

    def add(self, records: Sequence[RecordLike], now: float, start: int = 0) -> None:
        """Route ``records[start:]`` into open batches, closing those that fill up."""
        index = start
        try:
            for index in range(start, len(records)):
                self._add(records[index], now)
        except Exception:
            self.failed_at = index
            raise

    def _add(self, record: RecordLike, now: float) -> None:
        plan = self.plan
        plan.events += 1
        value = record.value
        facts = check_record(record.key, value, record.headers)
        if isinstance(facts, str):
            self._dead.append(malformed_record(record, facts, self._topics))
            plan.malformed += 1
            return
        assert value is not None  # check_record refuses records without a value
        destinations = self._matching(facts.workspace_id, facts.event_type)
        if not destinations:
            plan.unrouted += 1
            return
        size = len(value) + 1  # and a comma
        part = (record.topic, record.partition)
        open_batches = self._open
        for config in destinations:
            batch = open_batches.get(config.id)
            if batch is not None and batch.size + size > self._max_bytes:
                self._close(batch)
                batch = None
            if batch is None:
                batch = self._open_batch(config, record.timestamp, now)
            if batch.part != part:
                batch.part = part
                if part not in batch.firsts:
                    batch.firsts[part] = record.offset
                    self._holders.setdefault(part, {})[batch] = record.offset
            batch.events.append(value)
            batch.size += size
            if len(batch.events) >= self._max_events:
                self._close(batch)
        plan.routed += len(destinations)

    def _open_batch(self, config: DestinationConfig, stamp: int | None,
                    now: float) -> _OpenBatch:
        first_ms = stamp if stamp and stamp > 0 else int(now * 1000)
        deadline = batch_deadline(now, first_ms, self.window)
        batch = self._open[config.id] = _OpenBatch(config, first_ms, deadline)
        self._sequence += 1
        heapq.heappush(self._deadlines, (deadline, self._sequence, batch))
        return batch

    def _close(self, batch: _OpenBatch) -> None:
        del self._open[batch.config.id]
        for part in batch.firsts:
            holders = self._holders[part]
            del holders[batch]
            if not holders:
                del self._holders[part]
        self._closed.append(batch.close(self._topics))

    def next_due(self) -> float | None:
        """When the next open batch is due (epoch seconds), or None without open batches."""
        deadlines = self._deadlines
        while deadlines and not deadlines[0][2].open:
            heapq.heappop(deadlines)
        return deadlines[0][0] if deadlines else None

    def close_due(self, now: float) -> None:
        """Close every open batch whose deadline is ``now`` or earlier."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            batch = heapq.heappop(deadlines)[2]
            if batch.open:
                self._close(batch)

    def close_all(self) -> None:
        """Close every open batch, oldest first."""
        while self._deadlines:
            batch = heapq.heappop(self._deadlines)[2]
            if batch.open:
                self._close(batch)

    def take(self) -> list[OutRecord]:
        """The records closed since the last take: batches (in order per destination),
        then dead letters (in input order)."""
        out = self._closed + self._dead
        self._closed, self._dead = [], []
        return out

    def held(self) -> dict[tuple[str, int], int]:
        """Per input partition, the lowest offset of an event in an open batch."""
        return {part: next(iter(holders.values())) for part, holders in self._holders.items()}


def plan_round(records: Iterable[RecordLike], matching: Matching, topics: TopicNames, *,
               max_events: int = 100, max_bytes: int = MAX_BATCH_BYTES,
               now_ms: int | None = None) -> RoundPlan:
    """Group a round of input into batches per destination, and dead-letter malformed records.

    Per destination the input order is kept, and batches hold at most
    ``max_events`` events and ``max_bytes`` of body. A batch's ``first_event_ms``
    is the Kafka timestamp of its oldest event (``now_ms`` if a record has none).
    Values go into bodies untouched. (A :class:`BatchBuffer` given all of them and
    then closed.)
    """
    now = time.time() if now_ms is None else now_ms / 1000
    buffer = BatchBuffer(matching, topics, max_events=max_events, max_bytes=max_bytes)
    buffer.add(records if isinstance(records, Sequence) else list(records), now)
    buffer.close_all()
    plan = buffer.plan
    plan.records = buffer.take()
    return plan
