"""Identifier formats of the wire contract, and a fast monotonic ULID source.

Formats (each one a regular expression, documented in docs/events.md):

``event id``
    ``aud_`` + a ULID in canonical Crockford base32, upper case, 26 characters
    (48-bit millisecond timestamp, 80 random bits), or ``aud_`` + a UUIDv7 in its
    canonical form (RFC 9562: lower-case hex, ``8-4-4-4-12``, version 7, variant
    ``10``). Both are time-sortable; services in other languages usually have a
    UUIDv7 generator at hand. Unique per event: ``source`` + ``id`` is the
    deduplication key downstream. auditrelay's own events use ULIDs.

``workspace id``
    ``ws_`` + 1 to 40 lower-case ASCII letters or digits (``ws_xyz``,
    ``ws_01jd7q0z8n6y0f3x5kq2m1v9rt``). The CloudEvents naming rule (lower-case
    a-z0-9) binds the extension attribute *name*, ``workspaceid``; its *value*
    is a string, and this narrow alphabet keeps that string safe everywhere the
    contract puts it: the Kafka key, the ``ce_workspaceid`` header, the path of
    ``source``, URLs of the management API and topic names. :func:`new_workspace_id`
    makes one from a lower-cased ULID.

``destination id``
    ``dst_`` + 1 to 40 lower-case ASCII letters or digits; the API makes them from a
    lower-cased ULID. They key records (``audit.deliveries``) and name URLs, and
    named topics in the first release (``audit.dest.{id}``), hence the same narrow
    alphabet as workspace ids.

``token id``
    ``tok_`` + 1 to 40 lower-case ASCII letters or digits: the id of one of a
    workspace's API tokens (never the token itself), in URLs of the management API.

``reference id`` (actor and target ids)
    1 to 256 printable characters (no control characters); these name objects
    of the emitting service, whose formats auditrelay does not own.
"""

from __future__ import annotations

import os
import re
import threading
import time
import weakref
from typing import Final

EVENT_ID_PREFIX: Final = "aud_"
WORKSPACE_ID_PREFIX: Final = "ws_"

#: A ULID's first character carries only 3 bits (128 bits in 26 base32 digits).
EVENT_ID_PATTERN: Final = (r"^aud_(?:[0-7][0-9A-HJKMNP-TV-Z]{25}"
                           r"|[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12})$")
WORKSPACE_ID_PATTERN: Final = r"^ws_[a-z0-9]{1,40}$"
DESTINATION_ID_PATTERN: Final = r"^dst_[a-z0-9]{1,40}$"
TOKEN_ID_PATTERN: Final = r"^tok_[a-z0-9]{1,40}$"  # noqa: S105 - an id format, no secret
REFERENCE_ID_PATTERN: Final = r"^[^\x00-\x1f\x7f]{1,256}$"

EVENT_ID_RE: Final = re.compile(EVENT_ID_PATTERN)
WORKSPACE_ID_RE: Final = re.compile(WORKSPACE_ID_PATTERN)
DESTINATION_ID_RE: Final = re.compile(DESTINATION_ID_PATTERN)
TOKEN_ID_RE: Final = re.compile(TOKEN_ID_PATTERN)
REFERENCE_ID_RE: Final = re.compile(REFERENCE_ID_PATTERN)

_CROCKFORD: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: Every 10-bit value as two Crockford digits: encoding a ULID is then 13 lookups.
_PAIRS: Final = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)
_RANDOM_BITS: Final = 80
_RANDOM_LIMIT: Final = 1 << _RANDOM_BITS


def is_event_id(value: object) -> bool:
    return isinstance(value, str) and EVENT_ID_RE.fullmatch(value) is not None


def is_workspace_id(value: object) -> bool:
    return isinstance(value, str) and WORKSPACE_ID_RE.fullmatch(value) is not None


def is_destination_id(value: object) -> bool:
    return isinstance(value, str) and DESTINATION_ID_RE.fullmatch(value) is not None


def is_token_id(value: object) -> bool:
    return isinstance(value, str) and TOKEN_ID_RE.fullmatch(value) is not None


def _encode_bits(value: int, pairs: int) -> str:
    """``value`` as ``2 * pairs`` Crockford digits, most significant first."""
    return "".join(_PAIRS[(value >> (10 * i)) & 1023] for i in range(pairs - 1, -1, -1))


class UlidSource:
    """Monotonic ULIDs: strictly increasing within one process, also within a millisecond.

    Within one millisecond (or when the wall clock steps back) the random part
    is incremented instead of redrawn, as the ULID spec's monotonic mode says, so
    ids sort in emission order. Thread-safe; re-seeded in a forked child so that
    parent and child never share a sequence.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()
        _SOURCES.add(self)

    def _reset(self) -> None:
        self._last_ms = -1
        self._random = 0
        self._prefix = ""  # time digits + the random part's high digits, cached per ms
        self._prefix_high = -1

    def new(self, ms: int | None = None) -> tuple[int, str]:
        """A fresh ULID string and the millisecond timestamp it carries."""
        if ms is None:
            ms = time.time_ns() // 1_000_000
        with self._lock:
            if ms <= self._last_ms:
                ms = self._last_ms
                self._random += 1
                if self._random >= _RANDOM_LIMIT:  # 2**80 ids in one ms: borrow the next ms
                    ms += 1
                    self._random = int.from_bytes(os.urandom(10), "big") >> 1
            else:
                # The top bit stays clear so that increments never overflow in practice.
                self._random = int.from_bytes(os.urandom(10), "big") >> 1
            if ms != self._last_ms:
                self._last_ms = ms
                self._prefix_high = -1
            rnd = self._random
            high = rnd >> 20
            if high != self._prefix_high:
                # 48-bit time as 10 digits (2 leading zero bits), then 60 random bits as 12.
                self._prefix = _encode_bits(ms, 5) + _encode_bits(high, 6)
                self._prefix_high = high
            return ms, self._prefix + _PAIRS[(rnd >> 10) & 1023] + _PAIRS[rnd & 1023]


_SOURCES: weakref.WeakSet[UlidSource] = weakref.WeakSet()


def _reseed_after_fork() -> None:
    for source in list(_SOURCES):
        source._lock = threading.Lock()
        source._reset()


os.register_at_fork(after_in_child=_reseed_after_fork)

_DEFAULT_SOURCE: Final = UlidSource()


def new_event_id() -> str:
    """``aud_`` + a fresh monotonic ULID."""
    return EVENT_ID_PREFIX + _DEFAULT_SOURCE.new()[1]


def new_workspace_id() -> str:
    """``ws_`` + a fresh ULID in lower case (26 characters)."""
    return WORKSPACE_ID_PREFIX + _DEFAULT_SOURCE.new()[1].lower()
