"""Router: consumes audit.events, produces audit.deliveries and audit.dlq.

For each event the router finds the enabled destinations of its workspace whose
event-type globs match (destinations of workspaces without the forwarding
entitlement are never matched), batches the events per destination (at most
``batch_max_events``, flushed at least every ``batch_window_seconds``) and
produces each batch to ``audit.deliveries`` keyed by its destination id, the event
bytes untouched (:mod:`auditrelay.agents.routing` holds the logic, this module the
Kafka side). A destination deleted after its batch was routed is the delivery
stage's to refuse (dead letter, reason ``destination_deleted``).

Guarantees:

- The input is read in rounds (:mod:`auditrelay.kafka.rounds`: up to ``ROUND_EVENTS``
  records, or what came within ``batch_window_seconds`` of the round's first),
  handed to the Faust agent ``router``, and committed only after every record
  made from it (batches and dead letters) is confirmed by the broker, that is
  once :meth:`Router.handle` returned.
- Nothing escapes :meth:`Router.handle` but cancellation: produce failures (broker
  down) are retried with backoff, resending only what was not confirmed, until
  everything is. Malformed input goes to ``audit.dlq`` with reason
  ``malformed_event`` and the detail.
- One round at a time (``concurrency=1``), for per-destination order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import faust

from auditrelay.agents.routing import (
    OutRecord,
    RecordLike,
    RoundPlan,
    plan_round,
)
from auditrelay.kafka.backoff import Backoff
from auditrelay.kafka.rounds import Round, hand_over_to, input_consumer, read_rounds, settle
from auditrelay.observability import metrics
from auditrelay.schemas.settings import Settings
from auditrelay.schemas.topics import TopicNames
from auditrelay.tables.registry import DestinationRegistry, RegistryFollower, SharedFollower
from auditrelay.tables.registry import wait_until_caught_up as _wait_until_caught_up

__all__ = ["FaustPublisher", "Publisher", "Router", "RouterStats", "register"]

log = logging.getLogger(__name__)

#: Events the agent takes per round (it also stops waiting after the batch window).
#: Several batches' worth, so that at high volume batches are full and rounds few.
ROUND_EVENTS: Final = 2000
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
        self.batches += len(plan.records) - plan.malformed

    def line(self, seconds: float) -> str:
        return (f"router: {self.events} events in {seconds:.0f} s "
                f"({self.events / seconds:.1f}/s), {self.routed} routed in {self.batches} "
                f"batches, {self.malformed} malformed, {self.retries} produce retries")


class Router:
    """Routes rounds of input records; the agent body only calls :meth:`handle`."""

    def __init__(self, registry: DestinationRegistry, topics: TopicNames, publisher: Publisher,
                 *, max_events: int = 100, backoff_seconds: tuple[float, float] = (0.5, 30.0),
                 schedule_timeout: float = 30.0) -> None:
        self.registry = registry
        self.topics = topics
        self.publisher = publisher
        self.max_events = max_events
        self.stats = RouterStats()
        self._backoff_seconds = backoff_seconds
        self._schedule_timeout = schedule_timeout

    async def handle(self, records: Sequence[RecordLike]) -> RoundPlan:
        """Plan one round and publish it; returns once the broker confirmed every record.

        Never raises but for cancellation: a failure inside (a bug) is logged and the
        round retried, since returning or raising would ack input not yet routed.
        """
        backoff = Backoff(*self._backoff_seconds)
        while True:
            try:
                plan = plan_round(records, self.registry.matching, self.topics,
                                  max_events=self.max_events)
                await self.publish(plan.records)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("router round of %d records failed; retrying in %.1f s",
                              len(records), backoff.delay)
                await backoff.wait()
                continue
            self.stats.add(plan)
            metrics.count_round(routed=plan.events - plan.unrouted - plan.malformed,
                                unmatched=plan.unrouted, malformed=plan.malformed)
            return plan

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
    """Add the router agent, and the reader that feeds it rounds, to ``app``.

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
                    max_events=settings.batch_max_events)
    rounds_channel: faust.ChannelT[Round] = app.channel()

    @app.agent(rounds_channel, name="router", concurrency=1)
    async def route(rounds: faust.StreamT[Round]) -> None:
        async for batch in rounds:
            await settle(batch, router.handle(batch.records))

    async def read_events() -> None:
        if follower is not None:
            await _wait_until_caught_up(follower, "the router")
        await read_rounds(input_consumer(settings, settings.topics.router_group,
                                         "auditrelay-router"),
                          settings.topics.events, hand_over_to(rounds_channel, "router"),
                          name="router", max_records=ROUND_EVENTS,
                          window=settings.batch_window_seconds)

    app.task(read_events)

    @app.timer(_REPORT_SECONDS)
    async def report_routing() -> None:
        stats, router.stats = router.stats, RouterStats()
        if stats.events or stats.retries:
            log.info(stats.line(_REPORT_SECONDS))

    return router
