"""Records between the pipeline's stages: batches, retries, dead letters.

A batch record's value is the exact HTTP body a destination receives: a JSON
array of 1 to 100 envelopes, their bytes as producers wrote them. Everything
else travels in ``ar_*`` headers, so no stage parses or re-serialises events.

``audit.deliveries``  key destination id; headers of ``BatchMeta``
``audit.parked``      the same (a destination's batches set aside, in order)
``audit.retry.{tier}`` the same, plus attempt count, first attempt and due time
``audit.dlq``          the same, plus a reason; malformed input keeps its
                        original key, value and non-``ar_`` headers, and names
                        where it came from (``MalformedInput``)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Final

HEADER_PREFIX: Final = "ar_"

Headers = Sequence[tuple[str, bytes | str | None]]

# DLQ reasons.
REASON_EXHAUSTED: Final = "retries_exhausted"
REASON_DISABLED: Final = "destination_disabled"
REASON_DELETED: Final = "destination_deleted"
REASON_MALFORMED: Final = "malformed_event"
#: The receiver answered that these events can never be accepted (a Splunk HEC
#: "invalid data format", an Elasticsearch mapping error): retrying cannot help.
REASON_REJECTED: Final = "rejected_by_receiver"


def batch_body(events: Iterable[bytes]) -> bytes:
    """``[e1,e2,...]``: the envelopes joined untouched into a JSON array."""
    return b"[" + b",".join(events) + b"]"


@dataclass(frozen=True)
class BatchMeta:
    """What travels with a batch in headers. Times are Unix milliseconds."""

    batch_id: str
    destination_id: str
    workspace_id: str
    events: int
    #: Kafka record timestamp of the oldest event of the batch, i.e. when its producer
    #: wrote it to audit.events (end-to-end latency is measured from it).
    first_event_ms: int
    #: Attempts already made (0 on audit.deliveries and audit.parked).
    attempt: int = 0
    first_attempt_ms: int = 0
    #: Not to be attempted before this moment (retry tiers).
    due_ms: int = 0
    last_error: str = ""
    #: DLQ only: why it is there, and the detail.
    reason: str = ""
    detail: str = ""

    def headers(self) -> list[tuple[str, bytes]]:
        return [(HEADER_PREFIX + f.name, str(getattr(self, f.name)).encode())
                for f in fields(self) if getattr(self, f.name) not in ("", 0) or f.name in _ALWAYS]

    @classmethod
    def from_headers(cls, headers: Headers | None) -> BatchMeta:
        """Parse ``ar_*`` headers; ValueError naming the header when one is missing or bad."""
        found = {k[len(HEADER_PREFIX):]: v for k, v in headers or () if k.startswith(HEADER_PREFIX)}
        values: dict[str, str | int] = {}
        for f in fields(cls):
            raw = found.get(f.name)
            if raw is None:
                if f.name in _ALWAYS:
                    raise ValueError(f"batch header {HEADER_PREFIX}{f.name} is missing")
                continue
            text = raw.decode() if isinstance(raw, bytes) else raw
            if f.type in ("int", int):
                try:
                    values[f.name] = int(text)
                except ValueError:
                    raise ValueError(f"batch header {HEADER_PREFIX}{f.name} is not an integer: "
                                     f"{text[:40]!r}") from None
            else:
                values[f.name] = text
        return cls(**values)  # type: ignore[arg-type]

    def evolve(self, **changes: str | int) -> BatchMeta:
        return replace(self, **changes)  # type: ignore[arg-type]


_ALWAYS: Final = frozenset({"batch_id", "destination_id", "workspace_id", "events",
                            "first_event_ms"})


#: Longest ``ar_detail`` of a malformed-input record; a reason, not a copy of the input.
MAX_DETAIL_CHARS: Final = 500


@dataclass(frozen=True)
class MalformedInput:
    """Headers of a malformed input record on ``audit.dlq``: why, and where it was read.

    Its value and key are the original record's, untouched; its other headers
    are the original's too, except any ``ar_*`` ones (ours to set).
    """

    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    reason: str = REASON_MALFORMED

    def headers(self) -> list[tuple[str, bytes]]:
        return [(HEADER_PREFIX + f.name, str(getattr(self, f.name)).encode())
                for f in fields(self)]

    @classmethod
    def from_headers(cls, headers: Headers | None) -> MalformedInput:
        """Parse ``ar_*`` headers; ValueError naming the header when one is missing or bad."""
        found = {k[len(HEADER_PREFIX):]: v for k, v in headers or () if k.startswith(HEADER_PREFIX)}
        text: dict[str, str] = {}
        for f in fields(cls):
            raw = found.get(f.name)
            if raw is None:
                raise ValueError(f"dead-letter header {HEADER_PREFIX}{f.name} is missing")
            text[f.name] = raw.decode() if isinstance(raw, bytes) else raw
        try:
            partition, offset = int(text["source_partition"]), int(text["source_offset"])
        except ValueError:
            raise ValueError(f"dead-letter headers {HEADER_PREFIX}source_partition and "
                             f"{HEADER_PREFIX}source_offset must be integers") from None
        return cls(text["detail"], text["source_topic"], partition, offset, text["reason"])


def malformed_record_headers(original: Headers | None, meta: MalformedInput) -> list[
        tuple[str, bytes | str | None]]:
    """The DLQ headers of a malformed record: the original's (minus ``ar_*``), then ``meta``'s."""
    kept: list[tuple[str, bytes | str | None]] = [
        (k, v) for k, v in original or () if not k.startswith(HEADER_PREFIX)]
    kept.extend(meta.headers())
    return kept
