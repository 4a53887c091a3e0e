"""One attempt of a batch to a destination of any kind: its requests sent one after
the other, their replies read by the kind, the outcome as one ``DeliveryResult``.

The kind cuts the batch into requests within its limits; a reply may take the
request (with items to send again or refused, as Elasticsearch's ``_bulk`` reports
them), ask for it to be split (413: the halves go at once), refuse it for good, or
fail it. The first failure ends the attempt: what was not taken yet (that request,
the ones after it, the items to send again) is the result's ``pending`` part, retried
as a batch of its own with the same batch id; refused events are its ``rejected``
part, dead-lettered with the receiver's words. A kind with a pace (Slack: one
request a second) makes the attempt wait for its turn (``Pacer``): the lane waits,
nothing is dropped.

A reply may also ask for a follow-up request before its verdict holds (Splunk HEC's
indexer acknowledgement: ``Verdict.follow_up``): it is sent after its delay (the lane
waits, as for a pace), and its reply's verdict replaces the first one. The kind bounds
the asking; ``MAX_FOLLOW_UPS`` bounds it here too, whatever a kind does.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from auditrelay.schemas.destinations import DestinationConfig
from auditrelay.schemas.errors import AuditRelayError
from auditrelay.wire.client import DeliveryResult, Part, Reply
from auditrelay.wire.kinds.base import Batch, Kind, Request, Target, Verdict
from auditrelay.wire.kinds.target import target_of
from auditrelay.wire.signing import Decrypter

__all__ = ["MAX_FOLLOW_UPS", "Attempter", "Pacer", "Poster", "send_batch"]

#: Follow-up requests of one request at most; then it is sent again later (retry).
MAX_FOLLOW_UPS = 30

#: Destinations whose last request time a pacer keeps before it forgets the stale ones.
_PACED_KEPT = 65_536


class Poster(Protocol):
    """What an attempt needs of ``auditrelay.wire.client.DeliveryClient``."""

    async def request(self, url: str, body: bytes,
                      headers: Mapping[str, str] | Callable[[], Mapping[str, str]],
                      ) -> Reply: ...


@dataclass
class Pacer:
    """The earliest moment of each destination's next request, for paced kinds."""

    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    _next: dict[str, float] = field(default_factory=dict)

    async def turn(self, destination_id: str, interval: float) -> None:
        """Wait until ``destination_id`` may send again, then book the next turn."""
        if interval <= 0:
            return
        now = self.clock()
        at = self._next.get(destination_id, now)
        if at > now:
            await self.sleep(at - now)  # a pace, not a poll: the receiver's limit
        if len(self._next) >= _PACED_KEPT:
            current = self.clock()
            self._next = {key: due for key, due in self._next.items() if due > current}
        self._next[destination_id] = max(at, now) + interval

    def replied(self, destination_id: str, interval: float) -> None:
        """Count the pace from the reply too: a request that left late (a busy loop, a
        slow connect) must not reach the receiver less than ``interval`` before the next
        one. The receiver took it before it replied, so this bounds what it sees."""
        if interval <= 0:
            return
        due = self.clock() + interval
        self._next[destination_id] = max(self._next.get(destination_id, due), due)


@dataclass
class Attempter:
    """Sends attempts of batches to destinations of any kind: the worker has one, and
    the API one for its test sends, so that a test send is what a delivery is."""

    poster: Poster
    box: Decrypter
    version: str
    pacer: Pacer = field(default_factory=Pacer)

    async def send(self, config: DestinationConfig, body: bytes, batch_id: str, events: int,
                   now: Callable[[], datetime]) -> DeliveryResult:
        """One attempt of the batch ``body`` (``events`` envelopes) to ``config``; never
        raises for the receiver's, the network's or the record's faults. ``now`` is asked
        again when a request is sent, so that a wait for a connection slot does not age
        a signature's timestamp."""
        try:
            kind, target = target_of(config, self.box, now, self.version)
            batch = Batch(body, batch_id, config.workspace_id, events)
            return await send_batch(self.poster, kind, target, batch, self.pacer)
        except (AuditRelayError, ValueError) as exc:
            # Our fault (a lost key, say), not the receiver's: retried like a failure,
            # so the batch waits for an operator instead of being lost.
            return DeliveryResult(ok=False, status_code=None, latency_ms=0,
                                  error=f"cannot prepare the request: {exc}",
                                  retry_after_seconds=None, gone=False)


@dataclass
class _Attempt:
    batch: Batch
    retry: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
    latency_ms: int = 0
    status: int | None = None
    problem: Verdict | None = None


async def send_batch(poster: Poster, kind: Kind, target: Target, batch: Batch,
                     pacer: Pacer) -> DeliveryResult:
    """Send ``batch`` to ``target`` once (see the module docstring); never raises for the
    receiver's or the network's faults."""
    attempt = _Attempt(batch)
    queue = deque(kind.requests(batch, target, range(batch.count)))
    while queue:
        request = queue.popleft()
        await pacer.turn(target.config.id, kind.limits.min_interval_seconds)
        reply = await poster.request(request.url, request.body, request.headers)
        pacer.replied(target.config.id, kind.limits.min_interval_seconds)
        attempt.latency_ms += reply.latency_ms
        attempt.status = reply.status
        verdict = kind.read(reply, request)
        if verdict.follow_up is not None:
            verdict = await _followed(poster, kind, pacer, request, verdict, attempt)
        if verdict.outcome in ("retry", "stop"):
            attempt.problem = verdict
            attempt.retry.extend(i for waiting in (request, *queue) for i in waiting.events)
            return _result(attempt, stopped=verdict.outcome == "stop")
        _take(attempt, kind, target, request, verdict, queue)
    return _result(attempt, stopped=False)


async def _followed(poster: Poster, kind: Kind, pacer: Pacer, request: Request,
                    verdict: Verdict, attempt: _Attempt) -> Verdict:
    """The verdict on ``request`` once the follow-ups its reply asked for are answered."""
    asked = 0
    while verdict.follow_up is not None:
        if asked >= MAX_FOLLOW_UPS:
            return Verdict("retry", f"{kind.label}: no final answer after {asked} follow-up "
                                    "requests; sent again later")
        follow_up = verdict.follow_up
        if follow_up.delay_seconds > 0:
            await pacer.sleep(follow_up.delay_seconds)  # the receiver's pace, not a poll
        sent = follow_up.request
        reply = await poster.request(sent.url, sent.body, sent.headers)
        attempt.latency_ms += reply.latency_ms
        verdict = kind.read_follow_up(reply, follow_up, request)
        asked += 1
    return verdict


def _take(attempt: _Attempt, kind: Kind, target: Target, request: Request, verdict: Verdict,
          queue: deque[Request]) -> None:
    """Note what a reply that ends no attempt says of ``request``'s events."""
    if verdict.outcome == "split" and len(request.events) > 1:
        half = len(request.events) // 2
        halves = [*kind.requests(attempt.batch, target, request.events[:half]),
                  *kind.requests(attempt.batch, target, request.events[half:])]
        queue.extendleft(reversed(halves))
        return
    if verdict.outcome in ("split", "rejected"):
        words = verdict.words or f"HTTP {attempt.status}"
        attempt.rejected.update(dict.fromkeys(request.events, words))
        attempt.problem = attempt.problem or verdict
        return
    for position in verdict.retry_items:
        attempt.retry.append(request.events[position])
    for position, reason in verdict.rejected_items:
        attempt.rejected[request.events[position]] = reason
    if verdict.retry_items or verdict.rejected_items:
        attempt.problem = attempt.problem or verdict


def _result(attempt: _Attempt, *, stopped: bool) -> DeliveryResult:
    batch, problem = attempt.batch, attempt.problem
    retry = sorted(set(attempt.retry) - attempt.rejected.keys())
    rejected = sorted(attempt.rejected)
    pending = None
    if retry and len(retry) < batch.count:
        pending = Part(batch.part(retry), len(retry), problem.words or "" if problem else "")
    refused = None
    if rejected:
        reasons = dict.fromkeys(attempt.rejected[i] for i in rejected)
        refused = Part(batch.part(rejected), len(rejected), "; ".join(reasons)[:300])
    return DeliveryResult(
        ok=not retry and not stopped,
        status_code=attempt.status,
        latency_ms=attempt.latency_ms,
        error=problem.words if problem is not None else None,
        retry_after_seconds=problem.retry_after_seconds if problem is not None else None,
        gone=stopped,
        pending=pending,
        rejected=refused,
    )
