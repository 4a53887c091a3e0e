"""One delivery attempt of a batch and everything that follows from it.

Shared by the delivery agent (first attempts) and the retry agent (later
ones): look the destination up, refuse it (dead letter) when it is deleted or
disabled, sign per contract section 2 and POST through the SSRF-safe client,
then carry out the verdict of ``auditrelay.wire.outcomes.decide``: the batch to a retry
tier or the dead-letter topic (confirmed by the broker before returning, so
the caller may commit the offset that held it), the destination disabled when
it answered 410 or kept failing for 72 hours, an attempt record and the
destination's new status.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from auditrelay.kafka.backoff import Backoff
from auditrelay.observability import metrics
from auditrelay.observability.logs import batch_ids
from auditrelay.schemas.batches import HEADER_PREFIX, REASON_MALFORMED, REASON_REJECTED, BatchMeta
from auditrelay.schemas.destinations import DestinationConfig
from auditrelay.schemas.errors import KafkaError
from auditrelay.schemas.topics import TopicNames
from auditrelay.tables.status import StatusBoard, StatusPublisher
from auditrelay.wire.client import DeliveryResult, Part
from auditrelay.wire.kinds.send import Attempter, Poster
from auditrelay.wire.outcomes import Decision, attempt_record, decide, next_status, refusal
from auditrelay.wire.retry_schedule import RetrySchedule
from auditrelay.wire.secrets import SecretBox
from auditrelay.wire.signing import Decrypter

__all__ = [
    "BatchProcessor",
    "ConfigLookup",
    "DecryptedCache",
    "Defer",
    "Disabler",
    "Dispatcher",
    "malformed_headers",
]

log = logging.getLogger(__name__)

_MAX_PRODUCE_BACKOFF = 10.0
#: A new destination's config reaches every worker's registry within a second or two.
UNKNOWN_WAIT_SECONDS = 15.0
_UNKNOWN_POLL_SECONDS = 0.05


class ConfigLookup(Protocol):
    """What delivery needs of ``auditrelay.tables.registry.DestinationRegistry``."""

    def get(self, destination_id: str) -> DestinationConfig | None: ...

    def deleted(self, destination_id: str) -> bool: ...


class Sink(Protocol):
    async def send(self, topic: str, key: bytes | None, value: bytes | None,
                   headers: Sequence[tuple[str, bytes]] = ()) -> None: ...


#: ``disable(destination_id, reason, detail)``: the destination is disabled in the database.
Disabler = Callable[[str, str, str], Awaitable[object]]

#: ``defer(*confirmations)``: the caller counts the batch as done once they are
#: (``auditrelay.kafka.keyed.Lane.confirm_after``).
Defer = Callable[..., None]


class DecryptedCache:
    """``SecretBox.decrypt`` remembered per ciphertext (at most ``keep`` of them).

    Decrypting a Fernet token costs tens of microseconds and a destination's
    URL, secret and headers are the same ciphertext for every batch; a changed
    secret or header set is a new ciphertext, decrypted afresh. Failures are
    not remembered.
    """

    def __init__(self, box: Decrypter, keep: int = 65_536) -> None:
        self._box = box
        self._keep = keep
        self._plain: dict[str, str] = {}

    def decrypt(self, ciphertext: str) -> str:
        plain = self._plain.get(ciphertext)
        if plain is None:
            plain = self._box.decrypt(ciphertext)
            if len(self._plain) >= self._keep:
                self._plain.clear()
            self._plain[ciphertext] = plain
        return plain


class Dispatcher:
    """Sends one attempt of a batch in its destination's kind
    (``auditrelay.wire.kinds``); never raises for the receiver's or the network's faults."""

    def __init__(self, client: Poster, box: SecretBox, version: str) -> None:
        self._attempter = Attempter(client, DecryptedCache(box), version)

    async def send(self, config: DestinationConfig, body: bytes, meta: BatchMeta,
                   now: Callable[[], datetime]) -> DeliveryResult:
        return await self._attempter.send(config, body, meta.batch_id, meta.events, now)


def malformed_headers(headers: Sequence[tuple[str, bytes]], detail: str,
                      ) -> list[tuple[str, bytes]]:
    """A malformed record's own headers, plus the DLQ reason and where it came from."""
    kept = [(k, v) for k, v in headers
            if k not in (f"{HEADER_PREFIX}reason", f"{HEADER_PREFIX}detail")]
    return [*kept, (f"{HEADER_PREFIX}reason", REASON_MALFORMED.encode()),
            (f"{HEADER_PREFIX}detail", detail.encode())]


@dataclass
class BatchProcessor:
    """Attempts batches and carries out the verdicts (see the module docstring)."""

    lookup: ConfigLookup
    board: StatusBoard
    status: StatusPublisher
    sink: Sink
    dispatcher: Dispatcher
    names: TopicNames
    schedule: RetrySchedule
    disable: Disabler
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.time
    #: How long a batch of a destination this worker has never heard of waits for its
    #: config (see :meth:`config_of`) before it is dead-lettered as deleted.
    unknown_wait_seconds: float = UNKNOWN_WAIT_SECONDS

    def parse(self, record: Any) -> BatchMeta | None:
        """The record's batch metadata, or None when its headers are unusable."""
        try:
            return BatchMeta.from_headers(record.headers)
        except ValueError:
            return None

    async def dead_letter_malformed(self, record: Any) -> None:
        try:
            BatchMeta.from_headers(record.headers)
            problem = "unusable batch headers"
        except ValueError as exc:
            problem = str(exc)
        detail = f"{problem}; from {record.topic}[{record.partition}]@{record.offset}"
        log.error("malformed batch record dead-lettered: %s", detail)
        await self._produce(self.names.dlq, record.key, record.value,
                            malformed_headers(list(record.headers or ()), detail),
                            what=f"malformed record from {record.topic}")
        metrics.count_dead_letter(REASON_MALFORMED)

    async def process(self, meta: BatchMeta, body: bytes, defer: Defer | None = None,
                      ) -> Decision:
        """One attempt of the batch (or its refusal), and its consequences.

        Returns once the batch itself is safe (delivered, or confirmed on a retry
        tier or the dead-letter topic). Its status and attempt records are then on
        their way: with ``defer`` (a lane's ``confirm_after``) their confirmations are
        handed to it, without it they are awaited before returning.
        """
        config = await self.config_of(meta.destination_id)
        refused = refusal(config, self.board.get(meta.destination_id))
        if refused is not None or config is None:
            reason = refused.reason if refused is not None else ""
            detail = refused.detail if refused is not None else ""
            decision = Decision("dead_letter", meta.evolve(reason=reason, detail=detail))
            await self.apply(decision, None, body, defer)
            return decision
        result = await self.dispatcher.send(config, body, meta,
                                            lambda: _at(round(self.clock() * 1000)))
        decision = decide(result, meta, round(self.clock() * 1000), self.schedule, self.rng)
        await self.apply(decision, result, body, defer)
        return decision

    async def config_of(self, destination_id: str) -> DestinationConfig | None:
        """The destination's config; for an id this worker's registry has never seen (nor
        seen deleted), waits up to ``unknown_wait_seconds`` for it to arrive.

        The router of another worker may route a new destination's first batch before
        this worker's registry has read its config from ``audit.destinations``; refusing
        it at once would dead-letter a healthy destination's batch as deleted.
        """
        config = self.lookup.get(destination_id)
        if config is not None or self.lookup.deleted(destination_id):
            return config
        deadline = time.monotonic() + self.unknown_wait_seconds
        while time.monotonic() < deadline:
            # The registry is filled by its follower thread: nothing here to wait on.
            await asyncio.sleep(_UNKNOWN_POLL_SECONDS)
            config = self.lookup.get(destination_id)
            if config is not None or self.lookup.deleted(destination_id):
                return config
        return None

    async def apply(self, decision: Decision, result: DeliveryResult | None,
                    body: bytes, defer: Defer | None = None) -> None:
        meta = decision.meta
        now = _at(round(self.clock() * 1000))
        previous = self.board.get(meta.destination_id)
        status = next_status(previous, decision, result, now)
        if decision.disable is not None:
            # Vetoes the destination's next batch at once, before any await.
            self.board.update(status)
        what = f"batch {meta.batch_id} of {meta.destination_id}"
        carried = decision.body if decision.body is not None else body
        if decision.kind == "retry":
            assert decision.tier is not None
            await self._produce(self.names.retry(decision.tier), meta.destination_id.encode(),
                                carried, meta.headers(), what=what, ids=batch_ids(meta))
        elif decision.kind in ("dead_letter", "disabled"):
            await self._produce(self.names.dlq, meta.destination_id.encode(), carried,
                                meta.headers(), what=what, ids=batch_ids(meta))
        if decision.rejected is not None:
            await self._dead_letter_rejected(meta, decision.rejected, what)
        if decision.disable is not None:
            await self._disable(meta, decision.disable)
        self._log(decision, result)
        metrics.count_decision(decision.kind, meta,
                               result.latency_ms / 1000 if result is not None else None,
                               self.clock())
        records = []
        # A refused batch of an already disabled destination changes nothing to report.
        if not (result is None and previous is not None and previous.state == "disabled"):
            records.append(self.status.status(status))
        records.append(self.status.attempt(attempt_record(decision, result, now)))
        if defer is not None:
            defer(*records)
        else:
            await asyncio.gather(*records)

    async def _dead_letter_rejected(self, meta: BatchMeta, part: Part, what: str) -> None:
        """The events the receiver refused for good, as a dead letter of their own (the
        rest of the batch was delivered or goes on)."""
        dead = meta.evolve(events=part.events, reason=REASON_REJECTED, detail=part.detail,
                           last_error=part.detail)
        await self._produce(self.names.dlq, meta.destination_id.encode(), part.body,
                            dead.headers(), what=f"refused events of {what}",
                            ids=batch_ids(meta))
        metrics.count_dead_letter(REASON_REJECTED)

    async def _disable(self, meta: BatchMeta, reason: str) -> None:
        try:
            await self.disable(meta.destination_id, reason, meta.detail)
        except Exception:
            # The published status still vetoes deliveries; the row is fixed by hand
            # or on the next failure.
            log.exception("destination %s could not be disabled (%s) in the database",
                          meta.destination_id, reason, extra=batch_ids(meta))

    async def _produce(self, topic: str, key: bytes | None, value: bytes | None,
                       headers: Sequence[tuple[str, bytes]], *, what: str,
                       ids: dict[str, str] | None = None) -> None:
        """Produce until the broker confirms: the offset is committed only afterwards."""
        backoff = Backoff(0.5, _MAX_PRODUCE_BACKOFF)
        while True:
            try:
                await self.sink.send(topic, key, value, headers)
                return
            except KafkaError as exc:
                log.warning("%s not yet on %s (%s); again in %.1f s", what, topic, exc,
                            backoff.delay, extra=ids)
            await backoff.wait()

    @staticmethod
    def _log(decision: Decision, result: DeliveryResult | None) -> None:
        meta = decision.meta
        # The ids as fields too, for JSON logs (observability.logs); never headers or bodies.
        extra: dict[str, object] = {**batch_ids(meta), "outcome": decision.kind,
                                    "tier": decision.tier,
                                    "status_code": result.status_code if result else None}
        if decision.kind == "delivered":
            log.debug("batch %s delivered to %s", meta.batch_id, meta.destination_id,
                      extra=extra)
            return
        error = result.error if result is not None else meta.detail
        log.info("batch %s of %s: %s%s (%s)", meta.batch_id, meta.destination_id, decision.kind,
                 f" to tier {decision.tier}" if decision.tier else "", error, extra=extra)


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
