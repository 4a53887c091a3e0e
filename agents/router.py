"""Router: consumes audit.events, produces audit.deliveries and audit.dlq.

For each event the router finds the enabled destinations of its workspace whose
event-type globs match (destinations of workspaces without the forwarding
entitlement are never matched), batches the events per destination (at most
``batch_max_events``) and produces each batch to ``audit.deliveries`` keyed by its
destination id, the event bytes untouched (:mod:`auditrelay.agents.routing` holds the
logic, this module the Kafka side). A destination deleted after its batch was
routed is the delivery stage's to refuse (dead letter, reason ``destination_deleted``).

When a batch leaves (issue #14): **the moment it is full**; the window only bounds
partial batches. The router keeps each destination's open batch across reads
(:class:`~auditrelay.agents.routing.BatchBuffer`, in memory); every read, whatever
the consumer returned, joins the open batches, and a batch that reaches
``batch_max_events`` events (or the byte cap) is produced at once. A partial batch
is produced once its oldest event is ``batch_window_seconds`` old (by its Kafka
timestamp): the reader wakes up for that even when no records come.

Guarantees:

- At least once, commit only after settle: the input is read by a
  :class:`~auditrelay.kafka.streaming.StreamReader` (a consumer in the router's group),
  which commits a partition only up to the lowest offset still in an open batch,
  and only after every record made from what comes before it (batches, dead
  letters) was confirmed by the broker (:meth:`Router.step` returns only then).
  At a rebalance the open batches are produced and confirmed, then the offsets
  committed; at shutdown they are dropped, uncommitted, and read again by the
  partitions' next owner.
- Nothing escapes :meth:`Router.step` but cancellation: produce failures (broker
  down) are retried with backoff, resending only what was not confirmed, until
  everything is. Malformed input goes to ``audit.dlq`` with reason
  ``malformed_event`` and the detail.
- One step at a time, batches produced in order, for per-destination order. The
  router runs in a Faust task of its own, not an agent: no Faust stream acks
  anything here, the reader's commits are the only acknowledgement.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import faust

from auditrelay.agents.routing import (
    MAX_BATCH_BYTES,
    BatchBuffer,
    OutRecord,
    RecordLike,
    RoundPlan,
)
from auditrelay.kafka.backoff import Backoff
from auditrelay.kafka.rounds import input_consumer
from auditrelay.kafka.streaming import read_stream
from auditrelay.observability import metrics
from auditrelay.schemas.settings import Settings
from auditrelay.schemas.topics import TopicNames
from auditrelay.tables.registry import DestinationRegistry, RegistryFollower, SharedFollower
from auditrelay.tables.registry import wait_until_caught_up as _wait_until_caught_up

__all__ = ["FaustPublisher", "Publisher", "Router", "RouterStats", "register"]

log = logging.getLogger(__name__)

#: Most records one read hands the router. Several batches' worth, so that at high
#: volume a read fills batches and steps are few; at low volume a read is what came.
READ_EVENTS: Final = 2000
#: The router's fetch: the broker answers as soon as it has a record (no wait for more
#: bytes: at low rates that wait was latency), and when idle every half second (an
#: answer costs the worker CPU). At high rates a fetch finds plenty waiting anyway.
#: (A 10 ms wait for 256 KiB instead: 100 answers a second even idle; docs/performance.md.)
FETCH_MIN_BYTES: Final = 1
FETCH_MAX_WAIT_MS: Final = 500
_REPORT_SECONDS: Final = 10.0


class Publisher(Protocol):
    """The Kafka side of the router: what ``Router`` needs, faked in unit tests."""

    async def send(self, record: OutRecord) -> Awaitable[Any]:
        """Hand a record to the producer; returns a future of the broker's confirmation."""


class FaustPublisher:
    """Produces with the Faust app's producer (aiokafka: keys are partitioned with
    murmur2, as Java clients do)."""

    def __init__(self, app: faust.App) -> None:
        self._app = app

    async def send(self, record: OutRecord) -> Awaitable[Any]:
        headers: Any = list(record.headers)  # aiokafka accepts str, bytes or None values
        future: Awaitable[Any] = await self._app.producer.send(
            record.topic, record.key, record.value, None, None, headers)
        return future


@dataclass
class RouterStats:
    """Counters since the last report."""

    events: int = 0
    routed: int = 0
    batches: int = 0
    malformed: int = 0
    retries: int = 0

    def add(self, plan: RoundPlan) -> None:
        self.events += plan.events
        self.routed += plan.routed
        self.malformed += plan.malformed

    def line(self, seconds: float) -> str:
        return (f"router: {self.events} events in {seconds:.0f} s "
                f"({self.events / seconds:.1f}/s), {self.routed} routed in {self.batches} "
                f"batches, {self.malformed} malformed, {self.retries} produce retries")


class Router:
    """Routes input records into batches and produces them; the reader's stage
    (:class:`~auditrelay.kafka.streaming.Stage`)."""

    def __init__(self, registry: DestinationRegistry, topics: TopicNames, publisher: Publisher,
                 *, max_events: int = 100, window: float = 1.0,
                 max_bytes: int = MAX_BATCH_BYTES,
                 backoff_seconds: tuple[float, float] = (0.5, 30.0),
                 schedule_timeout: float = 30.0) -> None:
        self.registry = registry
        self.topics = topics
        self.publisher = publisher
        self.max_events = max_events
        self.stats = RouterStats()
        self.buffer = BatchBuffer(registry.matching, topics, max_events=max_events,
                                  max_bytes=max_bytes, window=window)
        #: Closed batches and dead letters not confirmed yet (kept through a failed step).
        self._out: list[OutRecord] = []
        self._backoff_seconds = backoff_seconds
        self._schedule_timeout = schedule_timeout

    async def step(self, records: Sequence[RecordLike], now: float | None = None) -> None:
        """Add ``records`` to the open batches; produce the batches full by now, those
        due at ``now`` (epoch seconds) and the dead letters; return once the broker
        confirmed them all.

        Never raises but for cancellation: a failure inside (a bug) is logged and the
        step retried from the record that failed, since raising would let the
        reader go on (and commit) past records not yet routed.
        """
        await self._settle(records, now, close_all=False)

    async def flush(self) -> None:
        """Produce every open batch (and whatever else is closed); returns once confirmed."""
        await self._settle((), None, close_all=True)

    async def handle(self, records: Sequence[RecordLike]) -> None:
        """Route ``records`` completely, as a round: partial batches too."""
        await self._settle(records, None, close_all=True)

    def next_due(self) -> float | None:
        return self.buffer.next_due()

    def held(self) -> Mapping[tuple[str, int], int]:
        return self.buffer.held()

    async def _settle(self, records: Sequence[RecordLike], now: float | None, *,
                      close_all: bool) -> None:
        backoff = Backoff(*self._backoff_seconds)
        buffer, start = self.buffer, 0
        while True:
            try:
                at = time.time() if now is None else now
                buffer.add(records, at, start)
                start = len(records)
                if close_all:
                    buffer.close_all()
                else:
                    buffer.close_due(at)
                self._out.extend(buffer.take())
                if self._out:
                    await self.publish(self._out)
                    self._out = []
            except asyncio.CancelledError:
                raise
            except Exception:
                if start < len(records):  # the add failed: resume at its record
                    start = buffer.failed_at
                log.exception("router step of %d records failed; retrying in %.1f s",
                              len(records), backoff.delay)
                await backoff.wait()
                continue
            plan, buffer.plan = buffer.plan, RoundPlan()
            self.stats.add(plan)
            metrics.count_round(routed=plan.events - plan.unrouted - plan.malformed,
                                unmatched=plan.unrouted, malformed=plan.malformed)
            return

    async def publish(self, records: Sequence[OutRecord]) -> None:
        """Produce ``records`` and wait until the broker confirmed all of them.

        Records that fail are sent again, with backoff, until confirmed; records
        still waiting are not sent twice. Order per destination is kept, except
        when the broker refuses a batch but accepts a later one of the same
        destination (a retry then comes after it).
        """
        todo: list[tuple[int, OutRecord]] = list(enumerate(records))
        inflight: dict[asyncio.Future[Any], tuple[int, OutRecord]] = {}
        backoff = Backoff(*self._backoff_seconds)
        while todo or inflight:
            problem: str | None = None
            if todo:
                todo, problem = await self._schedule(todo, inflight)
            if inflight:
                done, _ = await asyncio.wait(list(inflight))
                for future in done:
                    entry = inflight.pop(future)
                    error = (asyncio.CancelledError() if future.cancelled()
                             else future.exception())
                    if error is not None:
                        problem = f"{entry[1].topic}: {error!r}"
                        todo.append(entry)
                    else:
                        metrics.count_produced(entry[1].meta)
                        if entry[1].meta is not None and not entry[1].meta.reason:
                            self.stats.batches += 1
            if problem is not None and todo:
                self.stats.retries += 1
                log.warning("router: %d record(s) not confirmed (%s); retrying in %.1f s",
                            len(todo), problem, backoff.delay)
                await backoff.wait()
            todo.sort(key=lambda entry: entry[0])

    async def _schedule(self, todo: list[tuple[int, OutRecord]],
                        inflight: dict[asyncio.Future[Any], tuple[int, OutRecord]],
                        ) -> tuple[list[tuple[int, OutRecord]], str | None]:
        """Hand records to the producer in order; those not handed over, and why."""
        for position, entry in enumerate(todo):
            try:
                # Awaited inline, not in a task of its own as wait_for would: a send that
                # finds room in the producer's batch returns without a turn of the event
                # loop, which the delivery lanes keep busy. With a task per record, a
                # round of 10 000 records waited some 40 000 turns and the router fell
                # tens of seconds behind (issue #19, docs/scaling.md). Cancelling a send
                # still waiting for metadata or queue room is safe: the record is not
                # queued yet.
                async with asyncio.timeout(self._schedule_timeout):
                    future = await self.publisher.send(entry[1])
            except Exception as exc:
                return todo[position:], f"{entry[1].topic}: {exc!r}"
            inflight[asyncio.ensure_future(future)] = entry
        return [], None


def register(app: faust.App, settings: Settings, destinations: SharedFollower, *,
             registry: DestinationRegistry | None = None,
             publisher: Publisher | None = None) -> Router:
    """Add the router, and the reader that feeds it, to ``app`` (a Faust task).

    Without ``registry`` the app's :class:`~auditrelay.tables.registry.RegistryFollower`
    (``destinations``, shared with delivery) provides it, and the reader waits
    until it caught up with ``audit.destinations`` before reading anything. A
    given registry is used as it is (tests; a caller keeping it current itself).
    """
    follower: RegistryFollower | None = None
    if registry is None:
        follower = destinations.get()
        registry = follower.registry
    router = Router(registry, settings.topics,
                    publisher or FaustPublisher(app),
                    max_events=settings.batch_max_events,
                    window=settings.batch_window_seconds)

    async def read_events() -> None:
        if follower is not None:
            await _wait_until_caught_up(follower, "the router")
        await read_stream(input_consumer(settings, settings.topics.router_group,
                                         "auditrelay-router",
                                         fetch_min_bytes=FETCH_MIN_BYTES,
                                         fetch_max_wait_ms=FETCH_MAX_WAIT_MS),
                          settings.topics.events, router, name="router",
                          max_records=READ_EVENTS)

    app.task(read_events)

    @app.timer(_REPORT_SECONDS)
    async def report_routing() -> None:
        stats, router.stats = router.stats, RouterStats()
        if stats.events or stats.retries:
            log.info(stats.line(_REPORT_SECONDS))

    return router
