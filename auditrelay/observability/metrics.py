"""Every Prometheus metric of auditrelay, defined once; docs/metrics.md describes them.

Two registries, one per kind of process, so that each endpoint shows only what
its process measures: ``WORKER_REGISTRY`` (served on ``metrics_port`` by
``auditrelay.ops.runner.run_worker``) and ``API_REGISTRY`` (``GET /metrics`` of the API).

Counters and histograms are updated where things happen, through the small
``count_*`` functions below. They cost a dict lookup and a lock each and are
called per round or per batch, never per event. Label children are cached
(``_Children``).

What an endpoint costs grows with its series, so per-destination series are few: one
counter per destination and outcome (``auditrelay_deliveries_total``, which the
failing-destination alert needs), and the backlog and age gauges only for destinations
with something waiting. The router's counters carry no destination, and no counter or
histogram has a ``_created`` series (``disable_created_metrics``): with 10 000
destinations a scrape was 7.5 MB and 0.4 s of the worker's CPU (docs/metrics.md).
The gauges about Kafka (consumer lag, backlog,
retry tiers, dead letters) are set by ``auditrelay.observability.collector``'s thread from
broker offsets, off the hot path. The worker's heartbeat gauge is set by
``heartbeat``, a task on the worker's own event loop (``auditrelay.ops.runner``).

No Faust import here: the API imports this module.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, Generic, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from auditrelay.schemas.batches import REASON_MALFORMED, BatchMeta

__all__ = [
    "API_REGISTRY",
    "HEARTBEAT_SECONDS",
    "WORKER_REGISTRY",
    "count_api_request",
    "count_auth_failure",
    "count_dead_letter",
    "count_decision",
    "count_produced",
    "count_rate_limited",
    "count_round",
    "heartbeat",
    "waiting_for_slot",
]

disable_created_metrics()  # type: ignore[no-untyped-call]

WORKER_REGISTRY: Final = CollectorRegistry()
API_REGISTRY: Final = CollectorRegistry()
for _registry in (WORKER_REGISTRY, API_REGISTRY):
    ProcessCollector(registry=_registry)
    PlatformCollector(registry=_registry)
    GCCollector(registry=_registry)

# -- worker: counters and histograms (updated where things happen) ------------------------------

EVENTS_IN: Final = Counter(
    "auditrelay_events_in", "Records the router read from the events topic, by outcome: "
    "routed (to at least one destination), unmatched (no destination wants it), malformed "
    "(dead-lettered)", ["outcome"], registry=WORKER_REGISTRY)
BATCHES_OUT: Final = Counter(
    "auditrelay_batches_out", "Batches the router produced to audit.deliveries",
    registry=WORKER_REGISTRY)
BATCHED_EVENTS: Final = Counter(
    "auditrelay_batched_events", "Events in the batches the router produced to "
    "audit.deliveries", registry=WORKER_REGISTRY)
DELIVERIES: Final = Counter(
    "auditrelay_deliveries", "Handled batches (first attempts and retries), by outcome: "
    "delivered, retry, dead_letter, disabled", ["destination", "outcome"],
    registry=WORKER_REGISTRY)
DEAD_LETTERED: Final = Counter(
    "auditrelay_dead_lettered", "Records this worker wrote to the dead-letter topic, by reason",
    ["reason"], registry=WORKER_REGISTRY)
# Seconds from the Kafka timestamp of a batch's oldest event to the 2xx that delivered it,
# so up to the 72 hours of retries.
DELIVERY_LATENCY: Final = Histogram(
    "auditrelay_delivery_latency_seconds", "From the oldest event of a batch entering Kafka "
    "to the receiver's 2xx for it (end-to-end latency)",
    buckets=(0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300, 1800, 3600, 6 * 3600, 24 * 3600,
             72 * 3600), registry=WORKER_REGISTRY)
REQUEST_DURATION: Final = Histogram(
    "auditrelay_delivery_request_seconds", "Duration of one delivery HTTP request, whatever "
    "its outcome", buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15),
    registry=WORKER_REGISTRY)
SLOT_WAITING: Final = Gauge(
    "auditrelay_delivery_slot_waiting", "Delivery requests waiting for one of the client's "
    "max_connections connection slots (the worker's own queue: not yet an attempt)",
    registry=WORKER_REGISTRY)

# Set from the event loop that runs the stages, not from a thread: a loop that is stuck
# (or a process that is gone) stops it, while the metrics endpoint's thread may still answer.
WORKER_HEARTBEAT: Final = Gauge(
    "auditrelay_worker_heartbeat_timestamp_seconds", "When this worker's event loop last "
    "beat (Unix time, every few seconds); it stops moving when the loop is stuck",
    registry=WORKER_REGISTRY)
#: Seconds between two beats of ``heartbeat``; alerts allow several missed beats.
HEARTBEAT_SECONDS: Final = 5.0

# -- worker: gauges from Kafka offsets (auditrelay.observability.collector) ---------

PARKED_DESTINATIONS: Final = Gauge(
    "auditrelay_parked_destinations", "Destinations of this worker's delivery partitions with "
    "batches parked on audit.parked (an open circuit, or a lane that fell behind)",
    registry=WORKER_REGISTRY)
DESTINATION_BACKLOG: Final = Gauge(
    "auditrelay_destination_backlog", "Batches of a destination in the deliveries and parked "
    "topics past the delivery group's committed offsets (its key's records, at most "
    "peek_limit read per partition)", ["destination"],
    registry=WORKER_REGISTRY)
OLDEST_UNDELIVERED_AGE: Final = Gauge(
    "auditrelay_destination_oldest_undelivered_age_seconds", "Age of the oldest event of a "
    "destination waiting in the deliveries, parked or retry topics; 0 when none waits",
    ["destination"],
    registry=WORKER_REGISTRY)
DESTINATIONS: Final = Gauge(
    "auditrelay_destinations", "Destinations by state, from audit.destinations: enabled, or "
    "disabled with its reason (manual: by a user; gone: the receiver answered 410; failing: "
    "72 h of failed retries)", ["state", "reason"], registry=WORKER_REGISTRY)
RETRY_TIER_SIZE: Final = Gauge(
    "auditrelay_retry_tier_size", "Batches waiting in a retry tier (end offset minus the retry "
    "group's committed offset)", ["tier"], registry=WORKER_REGISTRY)
DEAD_LETTERS: Final = Gauge(
    "auditrelay_dead_letters", "Records retained in the dead-letter topic (end minus start "
    "offsets; replayed records stay until retention removes them)", registry=WORKER_REGISTRY)
CONSUMER_LAG: Final = Gauge(
    "auditrelay_consumer_lag", "Records not yet consumed by a consumer group (end offsets "
    "minus committed offsets), per group and topic", ["group", "topic"],
    registry=WORKER_REGISTRY)
OFFSETS_COLLECTED: Final = Gauge(
    "auditrelay_offsets_collected_timestamp_seconds", "When the gauges above were last "
    "computed (Unix time); they are stale if this stops moving", registry=WORKER_REGISTRY)
OFFSETS_ERRORS: Final = Counter(
    "auditrelay_offsets_collect_errors", "Failed attempts to read Kafka offsets for the gauges",
    registry=WORKER_REGISTRY)

# -- API ----------------------------------------------------------------------------------------

API_REQUESTS: Final = Counter(
    "auditrelay_api_requests", "HTTP requests the API answered, by method, route template and "
    "status", ["method", "route", "status"], registry=API_REGISTRY)
API_REQUEST_DURATION: Final = Histogram(
    "auditrelay_api_request_duration_seconds", "Time the API took to answer a request",
    ["method", "route"], registry=API_REGISTRY)
OUTBOX_BACKLOG: Final = Gauge(
    "auditrelay_outbox_backlog", "Outbox entries not yet published to Kafka (read at scrape "
    "time)", registry=API_REGISTRY)

# Label values are fixed words, never an address or a workspace id: attackers choose those.
AUTH_FAILURES: Final = Counter(
    "auditrelay_api_auth_failures", "Refused credentials, by where they were presented: "
    "bearer (an API call's token) or sign_in (the settings page's sign-in form)", ["via"],
    registry=API_REGISTRY)
RATE_LIMITED: Final = Counter(
    "auditrelay_api_rate_limited", "Requests refused with 429, by limit: auth_address, "
    "auth_workspace, test_send_destination, test_send_workspace", ["limit"],
    registry=API_REGISTRY)

M = TypeVar("M", Counter, Gauge, Histogram)


class _Children(Generic[M]):
    """A metric's label children, looked up once per label values.

    ``labels()`` validates and locks on every call; the cache makes repeat
    lookups a dict hit. A race only creates the same child twice (both calls
    return the one prometheus_client keeps).
    """

    def __init__(self, metric: M) -> None:
        self._metric: M = metric
        self._cache: dict[tuple[str, ...], M] = {}

    def get(self, *values: str) -> M:
        child = self._cache.get(values)
        if child is None:
            child = self._cache[values] = self._metric.labels(*values)
        return child


_events_in = _Children(EVENTS_IN)
_deliveries = _Children(DELIVERIES)
_dead_lettered = _Children(DEAD_LETTERED)
_api_requests = _Children(API_REQUESTS)
_api_durations = _Children(API_REQUEST_DURATION)
_auth_failures = _Children(AUTH_FAILURES)
_rate_limited = _Children(RATE_LIMITED)

_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def count_round(*, routed: int, unmatched: int, malformed: int) -> None:
    """One router step (a read, or batches due), once the broker confirmed what it produced."""
    for outcome, count in (("routed", routed), ("unmatched", unmatched),
                           ("malformed", malformed)):
        if count:
            _events_in.get(outcome).inc(count)


def count_produced(meta: BatchMeta | None) -> None:
    """A record of the router confirmed by the broker: a batch, or a dead letter.

    ``meta`` None is malformed input on its way to the dead-letter topic; a
    ``meta`` with a reason is a batch diverted there (its destination is gone).
    """
    if meta is None:
        count_dead_letter(REASON_MALFORMED)
    elif meta.reason:
        count_dead_letter(meta.reason)
    else:
        BATCHES_OUT.inc()
        BATCHED_EVENTS.inc(meta.events)


def count_dead_letter(reason: str) -> None:
    _dead_lettered.get(reason).inc()


def count_decision(kind: str, meta: BatchMeta, request_seconds: float | None,
                   now: float) -> None:
    """The outcome of handling one batch (``auditrelay.agents.dispatch``).

    ``request_seconds`` is None when no request was sent (a refused batch);
    ``now`` is Unix seconds, for the end-to-end latency of a delivered batch.
    """
    _deliveries.get(meta.destination_id, kind).inc()
    if request_seconds is not None:
        REQUEST_DURATION.observe(request_seconds)
    if kind == "delivered":
        DELIVERY_LATENCY.observe(max(0.0, now - meta.first_event_ms / 1000))
    elif kind in ("dead_letter", "disabled"):
        count_dead_letter(meta.reason or kind)


async def heartbeat(interval: float = HEARTBEAT_SECONDS) -> None:
    """Set ``WORKER_HEARTBEAT`` to now every ``interval`` seconds until cancelled.

    Runs on the loop of the worker's stages, so the gauge says that loop still turns.
    """
    while True:
        WORKER_HEARTBEAT.set(time.time())
        await asyncio.sleep(interval)


@contextmanager
def waiting_for_slot() -> Iterator[None]:
    """A delivery request waits for a connection slot (``auditrelay.wire.client``) meanwhile."""
    SLOT_WAITING.inc()
    try:
        yield
    finally:
        SLOT_WAITING.dec()


def count_api_request(method: str, route: str, status: int, seconds: float) -> None:
    """One answered API request; ``route`` is the route's template, never the raw path."""
    method = method if method in _METHODS else "OTHER"
    _api_requests.get(method, route, str(status)).inc()
    _api_durations.get(method, route).observe(seconds)


def count_auth_failure(via: str) -> None:
    """A token refused; ``via`` is ``bearer`` or ``sign_in``."""
    _auth_failures.get(via).inc()


def count_rate_limited(limit: str) -> None:
    """A request refused with 429 by ``limit`` (a name of ``auditrelay.api.ratelimit``)."""
    _rate_limited.get(limit).inc()
