"""The worker's Kafka gauges: consumer lag, destination backlog and age, retry tiers, DLQ size.

``OffsetCollector`` runs on a thread of its own (``start``/``stop``), never on
the event loop: every ``metrics_interval_seconds`` it asks the broker for the
start and end offsets of the pipeline's topics and the committed offsets of its
consumer groups, then sets the gauges of
``auditrelay.observability.metrics``. Only when something waits does it read records:
the waiting records of ``audit.deliveries``, ``audit.parked`` and the retry tiers (at
most ``peek_limit`` per partition), for their key (the destination: every destination
shares those topics, so its backlog is counted from its records, not from offsets)
and their ``ar_first_event_ms``, which gives the age of each destination's oldest
undelivered event. The destinations themselves (a series each, 0 when nothing waits)
come from a follower of ``audit.destinations``, which also gives how many are enabled
and how many disabled, by reason (``destination_states``).

Every worker computes the same cluster-wide values; aggregate them with
``max`` across workers, not ``sum`` (docs/metrics.md). The arithmetic is in pure
functions (``PartitionOffsets``, ``summarise``, ``oldest_ages``), tested
without Kafka.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from prometheus_client import start_http_server

from auditrelay.kafka.admin import admin_client
from auditrelay.observability import metrics
from auditrelay.schemas.batches import HEADER_PREFIX
from auditrelay.schemas.settings import Settings
from auditrelay.schemas.topics import RETRY_TIERS, TopicNames
from auditrelay.tables.registry import RegistryFollower

__all__ = ["Groups", "OffsetCollector", "PartitionOffsets", "Summary", "backlog_of",
           "oldest_ages", "serve_worker_metrics", "summarise", "waiting_destinations"]

log = logging.getLogger(__name__)

_TIMEOUT: Final = 10.0
#: How long one collection may spend reading the records at the heads of backlogs.
_PEEK_SECONDS: Final = 5.0
_NO_OFFSET: Final = 0  # committed offsets below this mean "none committed"
#: How long a group coordinator may still be loading before that is worth a warning.
_WARM_UP_SECONDS: Final = 60.0

TP = tuple[str, int]


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """One partition: its start and end offsets, and a group's committed offset (or None)."""

    low: int
    high: int
    committed: int | None = None

    @property
    def start(self) -> int:
        """Where the group reads next: its committed offset, or the start without one
        (every consumer here starts new partitions at the beginning). Records deleted
        by retention are not waiting any more, hence the max."""
        return self.low if self.committed is None else max(self.committed, self.low)

    @property
    def pending(self) -> int:
        """Records from where the group reads next to the end."""
        return max(0, self.high - self.start)


@dataclass(frozen=True, slots=True)
class Groups:
    """The consumer group ids of the pipeline's stages under one topic prefix."""

    router: str
    delivery: str
    retry: str
    archive: str

    @classmethod
    def of(cls, names: TopicNames) -> Groups:
        return cls(router=names.router_group, delivery=names.delivery_group,
                   retry=names.retry_group, archive=names.archive_group)


@dataclass
class Summary:
    """What the gauges show that offsets alone tell."""

    tiers: dict[str, int] = field(default_factory=dict)  # tier -> batches
    dead_letters: int = 0
    lag: dict[tuple[str, str], int] = field(default_factory=dict)  # (group, topic) -> records


def delivery_topics(names: TopicNames) -> tuple[str, str]:
    """The topics the delivery group reads, every destination's batches keyed by its id."""
    return names.deliveries, names.parked


def summarise(offsets: Mapping[TP, PartitionOffsets], names: TopicNames,
              groups: Groups) -> Summary:
    """Size per retry tier, DLQ size and lag per group and topic.

    ``offsets`` holds the partitions of the events topic, ``deliveries`` and
    ``parked`` (committed offsets of the router and delivery groups), the retry
    tiers (of the retry group) and the dead-letter topic (no group: its size is
    end minus start).
    """
    summary = Summary()
    tier_of = {names.retry(tier): tier for tier in RETRY_TIERS}
    summary.tiers = dict.fromkeys(RETRY_TIERS, 0)
    for topic in delivery_topics(names):
        summary.lag[(groups.delivery, topic)] = 0
    for (topic, _partition), part in offsets.items():
        if topic in delivery_topics(names):
            key = (groups.delivery, topic)
            summary.lag[key] += part.pending
        elif topic in tier_of:
            summary.tiers[tier_of[topic]] += part.pending
            key = (groups.retry, topic)
            summary.lag[key] = summary.lag.get(key, 0) + part.pending
        elif topic == names.dlq:
            summary.dead_letters += max(0, part.high - part.low)
        elif topic == names.events:
            key = (groups.router, topic)
            summary.lag[key] = summary.lag.get(key, 0) + part.pending
    return summary


def backlog_of(waiting: Iterable[str], destinations: Iterable[str]) -> dict[str, int]:
    """Batches per destination among the ``waiting`` records' keys; 0 for each of
    ``destinations`` without any."""
    backlog = dict.fromkeys(destinations, 0)
    for destination in waiting:
        backlog[destination] = backlog.get(destination, 0) + 1
    return backlog


def waiting_destinations(backlog: Mapping[str, int], ages: Mapping[str, float]) -> set[str]:
    """The destinations shown by the backlog and age gauges: those with something waiting.

    Idle destinations have no series at all, so that thousands of them cost a scrape
    nothing (an absent series reads as 0 in the alert and the dashboard).
    """
    return {dest for dest, batches in backlog.items() if batches or ages.get(dest, 0.0)}


def second_group_lag(offsets: Mapping[TP, PartitionOffsets],
                     committed: Mapping[TP, int | None]) -> int | None:
    """Records past another group's ``committed`` offsets on the partitions of ``offsets``.

    None while that group never committed on any of them: a stage that is not
    deployed (a worker may run without the archive) is not reported as lagging.
    """
    if all(committed.get(tp) is None for tp in offsets):
        return None
    return sum(PartitionOffsets(part.low, part.high, committed.get(tp)).pending
               for tp, part in offsets.items())


def oldest_ages(first_event_ms: Mapping[str, int], destinations: Iterable[str],
                now: float) -> dict[str, float]:
    """Seconds since the oldest waiting event of each destination; 0 where none waits."""
    return {dest: max(0.0, now - first_event_ms[dest] / 1000) if dest in first_event_ms else 0.0
            for dest in destinations}


_COORDINATOR_WARMING_UP: Final = frozenset({
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._WAIT_COORD})


#: The disabled reasons always shown (as 0 when none), so that alerts and panels see a
#: series before the first destination is disabled; any other reason gets one when seen.
DISABLED_REASONS: Final = ("manual", "gone", "failing")


def destination_states(configs: Iterable[Any]) -> dict[tuple[str, str], int]:
    """Destinations per (state, reason): ``("enabled", "")`` or ``("disabled", reason)``."""
    counts = {("enabled", ""): 0, **{("disabled", reason): 0 for reason in DISABLED_REASONS}}
    for config in configs:
        key = ("enabled", "") if config.enabled else \
            ("disabled", config.disabled_reason or "manual")
        counts[key] = counts.get(key, 0) + 1
    return counts


def is_coordinator_warming_up(exc: BaseException) -> bool:
    """True for the errors a group coordinator answers while it is still loading."""
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return isinstance(error, KafkaError) and error.code() in _COORDINATOR_WARMING_UP


def _header(headers: Any, name: str) -> str | None:
    for key, value in headers or ():
        if key == name and value is not None:
            return bytes(value).decode("utf-8", errors="replace")
    return None


class OffsetCollector:
    """Sets the Kafka gauges every ``interval`` seconds on a daemon thread."""

    def __init__(self, settings: Settings, *, admin: AdminClient | None = None,
                 peek_limit: int = 500) -> None:
        self._bootstrap = settings.kafka_bootstrap
        self._names = settings.topics
        self._groups = Groups.of(self._names)
        self._interval = settings.metrics_interval_seconds
        self._admin = admin or admin_client(settings.kafka_bootstrap)
        self._peek_limit = peek_limit
        self._destinations = RegistryFollower(settings.kafka_bootstrap, self._names.destinations)
        self._consumer: Consumer | None = None
        self._group_consumers: dict[str, Consumer] = {}
        self._shown: set[str] = set()  # destinations with gauge children
        self._states_shown: set[tuple[str, str]] = set()
        self._failing_since: float | None = None
        self._warned = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-collector", daemon=True)

    def start(self) -> OffsetCollector:
        self._destinations.start()
        self._thread.start()
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._destinations.stop()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            return  # still inside a collection: its clients must stay open; exit ends them
        for consumer in [*self._group_consumers.values(), self._consumer]:
            if consumer is not None:
                consumer.close()
        self._consumer = None
        self._group_consumers.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.collect()
            except Exception as exc:  # a broker outage or a bug; the gauges keep their values
                metrics.OFFSETS_ERRORS.inc()
                self._report_failure(exc)
            else:
                if self._failing_since is not None:
                    log.info("metrics: Kafka offsets readable again")
                self._failing_since = None
            self._stop.wait(self._interval)

    def _report_failure(self, exc: Exception) -> None:
        """One warning per streak of failures, not one every few seconds.

        A fresh broker's group coordinator takes a few seconds to load: that is a
        normal start, told at INFO, and a warning only if it lasts.
        """
        now = time.monotonic()
        message = "metrics: cannot read Kafka offsets (%s); gauges are stale"
        if self._failing_since is None:
            self._failing_since = now
            self._warned = not is_coordinator_warming_up(exc)
            log.log(logging.WARNING if self._warned else logging.INFO, message, exc)
        elif not self._warned and now - self._failing_since > _WARM_UP_SECONDS:
            self._warned = True
            log.warning(message, exc)

    # -- one collection ----------------------------------------------------------------------

    def collect(self) -> None:
        offsets = self.read_offsets()
        summary = summarise(offsets, self._names, self._groups)
        self._add_archive_lag(offsets, summary)
        waiting, first_event_ms = self._waiting(offsets)
        # Until the follower caught up, the destinations it knows may be a part of them.
        known = ([c.id for c in self._destinations.registry.all()]
                 if self._destinations.caught_up else self._shown)
        backlog = backlog_of(waiting, known)
        ages = oldest_ages(first_event_ms, backlog, time.time())
        self._publish(summary, backlog, ages)
        if self._destinations.caught_up:
            states = destination_states(self._destinations.registry.all())
            for key in self._states_shown - states.keys():  # a reason no longer held
                states[key] = 0
            for (state, reason), count in states.items():
                metrics.DESTINATIONS.labels(state, reason).set(count)
            self._states_shown = set(states)

    def _add_archive_lag(self, offsets: Mapping[TP, PartitionOffsets],
                         summary: Summary) -> None:
        """The archive reads ``audit.events`` in a group of its own, next to the router's."""
        events = {tp: part for tp, part in offsets.items() if tp[0] == self._names.events}
        if not events:
            return
        lag = second_group_lag(events, self._committed(self._groups.archive, list(events)))
        if lag is not None:
            summary.lag[(self._groups.archive, self._names.events)] = lag

    def read_offsets(self) -> dict[TP, PartitionOffsets]:
        """Start, end and committed offsets of every partition the gauges cover."""
        names = self._names
        topics = self._admin.list_topics(timeout=_TIMEOUT).topics
        retry_topics = {names.retry(tier) for tier in RETRY_TIERS}
        by_group: dict[str | None, list[TP]] = {}
        for name, meta in topics.items():
            if name == names.events:
                group: str | None = self._groups.router
            elif name in delivery_topics(names):
                group = self._groups.delivery
            elif name in retry_topics:
                group = self._groups.retry
            elif name == names.dlq:
                group = None
            else:
                continue
            by_group.setdefault(group, []).extend((name, p) for p in meta.partitions)
        every = [tp for tps in by_group.values() for tp in tps]
        # OffsetSpec's factories carry no annotations in confluent-kafka's stubs.
        low = self._list_offsets(every, OffsetSpec.earliest())  # type: ignore[no-untyped-call]
        high = self._list_offsets(every, OffsetSpec.latest())  # type: ignore[no-untyped-call]
        committed: dict[TP, int | None] = {}
        for group, tps in by_group.items():
            committed.update(self._committed(group, tps) if group else dict.fromkeys(tps))
        return {tp: PartitionOffsets(low[tp], high[tp], committed.get(tp)) for tp in every}

    def _list_offsets(self, tps: list[TP], spec: OffsetSpec) -> dict[TP, int]:
        if not tps:
            return {}
        futures = self._admin.list_offsets({TopicPartition(t, p): spec for t, p in tps},
                                           request_timeout=_TIMEOUT)
        return {(tp.topic, tp.partition): future.result().offset
                for tp, future in futures.items()}

    def _committed(self, group: str, tps: list[TP]) -> dict[TP, int | None]:
        # A consumer of the group that never subscribes (so never joins it) reads the
        # committed offsets. Not AdminClient.list_consumer_group_offsets: librdkafka can
        # crash the process when the group's coordinator is not ready (a fresh broker;
        # confluent-kafka-python#1982, confluent-kafka-javascript#374).
        consumer = self._group_consumers.get(group)
        if consumer is None:
            consumer = self._group_consumers[group] = Consumer({
                "bootstrap.servers": self._bootstrap, "group.id": group,
                "enable.auto.commit": False, "log_level": 0})
        result = consumer.committed([TopicPartition(t, p) for t, p in tps], timeout=_TIMEOUT)
        out: dict[TP, int | None] = {}
        for tp in result:
            if tp.error is not None:
                raise KafkaException(tp.error)
            out[(tp.topic, tp.partition)] = tp.offset if tp.offset >= _NO_OFFSET else None
        return out

    def _waiting(self, offsets: Mapping[TP, PartitionOffsets]) -> tuple[list[str], dict[str, int]]:
        """The destination of each record waiting in ``deliveries`` and ``parked``, and the
        oldest ``ar_first_event_ms`` per destination among those and the retry tiers'.

        At most ``peek_limit`` records per partition are read: beyond, a destination's
        backlog counts only those (the delivery group's lag still counts them all).
        """
        names = self._names
        shared = delivery_topics(names)
        retry_topics = {names.retry(tier) for tier in RETRY_TIERS}
        wanted: dict[TP, tuple[int, int]] = {}  # tp -> (first offset, records to read)
        for (topic, partition), part in offsets.items():
            if part.pending and (topic in shared or topic in retry_topics):
                wanted[(topic, partition)] = (part.start, min(part.pending, self._peek_limit))
        waiting: list[str] = []
        oldest: dict[str, int] = {}
        for msg in self._peek(wanted):
            key = (msg.key() or b"").decode("utf-8", errors="replace") or None
            destination = key or _header(msg.headers(), f"{HEADER_PREFIX}destination_id")
            if destination is None:
                continue
            if msg.topic() in shared:
                waiting.append(destination)
            first = _header(msg.headers(), f"{HEADER_PREFIX}first_event_ms")
            if first is None or not first.isdigit():
                continue
            oldest[destination] = min(int(first), oldest.get(destination, int(first)))
        return waiting, oldest

    def _peek(self, wanted: Mapping[TP, tuple[int, int]]) -> list[Any]:
        """Up to the given number of records of each partition from the given offset."""
        if not wanted:
            return []
        if self._consumer is None:
            # A throwaway group that never commits: reading here moves no one's offsets.
            self._consumer = Consumer({
                "bootstrap.servers": self._bootstrap, "group.id": f"metrics-{uuid.uuid4()}",
                "enable.auto.commit": False, "enable.partition.eof": False, "log_level": 0})
        consumer = self._consumer
        remaining = {tp: count for tp, (_, count) in wanted.items()}
        consumer.assign([TopicPartition(t, p, start) for (t, p), (start, _) in wanted.items()])
        out: list[Any] = []
        deadline = time.monotonic() + _PEEK_SECONDS
        try:
            while remaining and time.monotonic() < deadline:
                for msg in consumer.consume(500, timeout=0.2):
                    tp = (msg.topic() or "", msg.partition() or 0)
                    if msg.error() is not None or remaining.get(tp, 0) <= 0:
                        continue
                    out.append(msg)
                    remaining[tp] -= 1
                    if remaining[tp] == 0:
                        del remaining[tp]
        finally:
            consumer.unassign()
        return out

    def _publish(self, summary: Summary, backlog: Mapping[str, int],
                 ages: Mapping[str, float]) -> None:
        shown = waiting_destinations(backlog, ages)
        for destination in shown:
            metrics.DESTINATION_BACKLOG.labels(destination).set(backlog[destination])
            metrics.OLDEST_UNDELIVERED_AGE.labels(destination).set(ages.get(destination, 0.0))
        # A destination's series disappear once nothing of it waits (or it is deleted).
        for gone in self._shown - shown:
            for gauge in (metrics.DESTINATION_BACKLOG, metrics.OLDEST_UNDELIVERED_AGE):
                gauge.remove(gone)
        self._shown = shown
        for tier, size in summary.tiers.items():
            metrics.RETRY_TIER_SIZE.labels(tier).set(size)
        metrics.DEAD_LETTERS.set(summary.dead_letters)
        for (group, topic), lag in summary.lag.items():
            metrics.CONSUMER_LAG.labels(group, topic).set(lag)
        metrics.OFFSETS_COLLECTED.set(time.time())


def serve_worker_metrics(settings: Settings) -> Callable[[], None]:
    """Start the worker's ``/metrics`` endpoint and its Kafka gauges; returns what stops them.

    Off when ``metrics_port`` is 0. A port already taken (a second worker on the
    same machine) leaves the worker running unmeasured, with an error saying so:
    metrics are never a reason for the pipeline to stop.
    """
    if settings.metrics_port == 0:
        return lambda: None
    try:
        server, _ = start_http_server(settings.metrics_port, addr=settings.metrics_address,
                                      registry=metrics.WORKER_REGISTRY)
    except OSError as exc:
        log.error("metrics endpoint not started: cannot listen on %s:%d (%s); give each worker "
                  "on a machine its own AUDITRELAY_METRICS_PORT", settings.metrics_address,
                  settings.metrics_port, exc)
        return lambda: None
    collector = OffsetCollector(settings).start()

    def stop() -> None:
        collector.stop()
        server.shutdown()
        server.server_close()

    return stop
