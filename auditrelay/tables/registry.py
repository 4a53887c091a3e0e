"""Destination configs materialised from the compacted ``audit.destinations`` topic.

:class:`DestinationRegistry` is the pure table (no Kafka): records go in with
:meth:`~DestinationRegistry.apply`, the router asks
:meth:`~DestinationRegistry.matching` once per event and delivery asks
:meth:`~DestinationRegistry.get`. :class:`RegistryFollower` feeds one from the
topic on a daemon thread, and :class:`SharedFollower` gives a Faust app one
follower that lives and dies with it.

Concurrency: one writer thread (the follower) and any number of readers on the
event loop. The writer builds a new immutable :class:`_Snapshot` per change and
swaps one attribute; a reader takes the attribute once and works on that
snapshot, so the hot path never takes a lock.

Event-type globs: ``*`` matches any run of characters, dots included
(``pro.atmos.*`` matches ``pro.atmos.billing.invoice_paid``); every other
character is literal; a glob matches the whole type, case-sensitively. An empty
list of globs means every type. They are matched in linear time
(:mod:`auditrelay.schemas.globs`), whatever a stored glob looks like: the API
bounds new ones, but the topic may hold older or hand-written ones.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from confluent_kafka import Consumer
from pydantic import ValidationError

from auditrelay.kafka.topic_reader import CatchUp, note_positions, start_reading
from auditrelay.producer.librdkafka_log import librdkafka_logger
from auditrelay.schemas.destinations import DestinationConfig
from auditrelay.schemas.errors import BrokerUnavailableError, TopicError
from auditrelay.schemas.globs import GlobSet

__all__ = ["DestinationRegistry", "RegistryFollower", "SharedFollower",
           "wait_until_caught_up"]

log = logging.getLogger(__name__)

#: Records the follower applies at once (one snapshot each time).
_BATCH: Final = 500
#: Distinct (workspace, type) pairs cached per snapshot before the cache starts over.
_CACHE_LIMIT: Final = 65_536
_NONE: Final[tuple[DestinationConfig, ...]] = ()


@dataclass(frozen=True)
class _Route:
    """A destination that may receive events: enabled, entitled, with its compiled filter."""

    config: DestinationConfig
    #: None matches every type. Linear-time matching (schemas.globs): a tenant's glob
    #: cannot stall the event loop every tenant's routing runs on.
    globs: GlobSet | None

    def accepts(self, event_type: str) -> bool:
        return self.globs is None or self.globs.matches(event_type)


@dataclass(frozen=True)
class _Snapshot:
    """The registry at one moment. Never changed after construction, except ``cache``,
    whose entries are pure functions of the rest (so concurrent fills are harmless)."""

    configs: Mapping[str, DestinationConfig]
    routes: Mapping[str, tuple[_Route, ...]]
    cache: dict[tuple[str, str], tuple[DestinationConfig, ...]] = field(default_factory=dict)


#: What :func:`_decode` returns for a record to ignore.
_UNDECODABLE: Final = object()


def _decode(key: str, value: bytes | None) -> Any:
    """The record's config, None for a tombstone, or ``_UNDECODABLE`` (logged)."""
    if value is None:
        return None
    try:
        config = DestinationConfig.model_validate_json(value)
    except ValidationError as exc:
        log.warning("ignoring undecodable destination record %r: %s", key,
                    exc.errors(include_url=False, include_input=False)[:1])
        return _UNDECODABLE
    if config.id != key:
        log.warning("ignoring destination record keyed %r holding destination %r",
                    key, config.id)
        return _UNDECODABLE
    return config


def _routes_of(configs: Iterable[DestinationConfig]) -> tuple[_Route, ...]:
    """One workspace's routes, in destination-id order."""
    return tuple(_Route(c, GlobSet.compile(c.event_types))
                 for c in sorted(configs, key=lambda c: c.id) if c.enabled and c.forwarding)


#: Deletions remembered by :meth:`DestinationRegistry.deleted` (about 150 bytes each).
_DELETED_KEPT = 100_000


class DestinationRegistry:
    """The latest config of every destination, keyed by id (see the module docstring)."""

    def __init__(self) -> None:
        # The writer's own copies; each change publishes a fresh snapshot of them.
        self._configs: dict[str, DestinationConfig] = {}
        self._ids_by_workspace: dict[str, set[str]] = {}
        self._routes: dict[str, tuple[_Route, ...]] = {}
        self._snapshot = _Snapshot(MappingProxyType({}), MappingProxyType({}))
        self._write_lock = threading.Lock()  # writers only; readers never take it
        # Ids whose tombstone was read, oldest first (a dict as an ordered set).
        self._deleted: dict[str, None] = {}

    def apply(self, key: str, value: bytes | None) -> bool:
        """Apply one record of ``audit.destinations``; True if the registry changed.

        ``None`` is a tombstone: the destination is deleted. Otherwise the value is a
        :class:`DestinationConfig` as JSON, kept only if its ``version`` is higher than
        the one held (a replayed or reordered older record never wins). Undecodable
        records are logged and ignored: one bad record must not stop the pipeline.
        """
        return self.apply_many([(key, value)]) == 1

    def apply_many(self, records: Iterable[tuple[str, bytes | None]]) -> int:
        """Apply records as :meth:`apply` does, publishing one snapshot for all of them
        (a follower catching up with 10 000 destinations builds one, not 10 000);
        returns how many changed the registry."""
        decoded = [(key, config) for key, value in records
                   if (config := _decode(key, value)) is not _UNDECODABLE]
        with self._write_lock:
            touched: set[str] = set()
            changed = 0
            for key, config in decoded:
                held = self._configs.get(key)
                if config is None:
                    self._note_deleted(key)
                    if held is None:
                        continue
                    self._forget(held)
                else:
                    if held is not None and held.version >= config.version:
                        continue
                    if held is not None:
                        self._forget(held)
                    self._deleted.pop(key, None)
                    self._configs[key] = config
                    self._ids_by_workspace.setdefault(config.workspace_id, set()).add(key)
                    touched.add(config.workspace_id)
                if held is not None:
                    touched.add(held.workspace_id)
                changed += 1
            if changed:
                self._publish(touched)
        return changed

    def _note_deleted(self, key: str) -> None:
        self._deleted[key] = None
        if len(self._deleted) > _DELETED_KEPT:
            del self._deleted[next(iter(self._deleted))]

    def deleted(self, destination_id: str) -> bool:
        """Whether the destination's tombstone was read: it existed and was deleted (of the
        last ``_DELETED_KEPT`` deletions). An id neither known nor deleted may be one whose
        config has not arrived yet (another worker routed its batch first)."""
        return destination_id in self._deleted

    def _forget(self, config: DestinationConfig) -> None:
        del self._configs[config.id]
        ids = self._ids_by_workspace.get(config.workspace_id)
        if ids is not None:
            ids.discard(config.id)
            if not ids:
                del self._ids_by_workspace[config.workspace_id]

    def _publish(self, workspaces: set[str]) -> None:
        for workspace in workspaces:
            ids = self._ids_by_workspace.get(workspace, set())
            routes = _routes_of(self._configs[i] for i in ids)
            if routes:
                self._routes[workspace] = routes
            else:
                self._routes.pop(workspace, None)
        # Fresh mappings per change: the old snapshot's stay as they were.
        self._snapshot = _Snapshot(MappingProxyType(dict(self._configs)),
                                   MappingProxyType(dict(self._routes)))

    def get(self, destination_id: str) -> DestinationConfig | None:
        """The latest config of a destination, enabled or not; None if unknown or deleted."""
        return self._snapshot.configs.get(destination_id)

    def all(self) -> tuple[DestinationConfig, ...]:
        """Every known destination, in id order."""
        snapshot = self._snapshot
        return tuple(snapshot.configs[k] for k in sorted(snapshot.configs))

    def __len__(self) -> int:
        return len(self._snapshot.configs)

    def matching(self, workspace_id: str, event_type: str) -> tuple[DestinationConfig, ...]:
        """Enabled, entitled destinations of the workspace whose globs match the type.

        In destination-id order. Cached per (workspace, type) until the next change.
        """
        snapshot = self._snapshot
        key = (workspace_id, event_type)
        found = snapshot.cache.get(key)
        if found is not None:
            return found
        routes = snapshot.routes.get(workspace_id)
        found = _NONE if routes is None else tuple(
            r.config for r in routes if r.accepts(event_type))
        cache = snapshot.cache
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()  # bounded memory; a refill costs one glob match per pair
        cache[key] = found
        return found


class RegistryFollower:
    """Keeps a :class:`DestinationRegistry` up to date from ``audit.destinations``.

    A daemon thread assigns every partition of the topic from the beginning (no
    consumer group offsets: each process reads the whole compacted topic) and
    applies records forever. librdkafka reconnects by itself after a broker
    restart; the thread just keeps polling. Usage::

        follower = RegistryFollower(settings.kafka_bootstrap, settings.topics.destinations)
        follower.start()
        follower.wait_caught_up(30)   # everything published before start() is applied
        follower.registry.matching(ws, event_type)
        follower.stop()
    """

    def __init__(self, bootstrap: str, topic: str, *,
                 registry: DestinationRegistry | None = None,
                 poll_seconds: float = 0.2) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.registry = registry if registry is not None else DestinationRegistry()
        self._poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._kafka_log = librdkafka_logger(f"{__name__}.librdkafka")

    @property
    def caught_up(self) -> bool:
        """Whether every record that existed when the follower started has been applied."""
        return self._caught_up.is_set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> RegistryFollower:
        """Start the thread; calling it again while it runs does nothing."""
        with self._start_lock:
            if self._thread is not None:
                return self
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"registry-follower:{self.topic}")
            self._thread.start()
        return self

    def wait_caught_up(self, timeout: float) -> None:
        """Block until caught up; BrokerUnavailableError when ``timeout`` passes first."""
        if not self._caught_up.wait(timeout):
            raise BrokerUnavailableError(
                f"the destination registry did not catch up with {self.topic} on "
                f"{self.bootstrap} within {timeout:g} s")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop polling and close the consumer; waits up to ``timeout`` for the thread."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the thread ---------------------------------------------------------------------

    def _run(self) -> None:
        consumer = Consumer({
            "bootstrap.servers": self.bootstrap,
            # Unique and never committed: this is a replica of the topic, not a group member.
            "group.id": f"auditrelay-registry-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "error_cb": self._on_error,
        }, logger=self._kafka_log)
        try:
            progress = self._assign(consumer)
            if progress is None:
                return  # stopped before the topic could be read
            self._follow(consumer, progress)
        except Exception:
            # Not expected (librdkafka reports errors rather than raising them);
            # logged so that a registry frozen in time is visible.
            log.exception("destination registry follower of %s stopped", self.topic)
        finally:
            consumer.close()

    def _on_error(self, error: Any) -> None:
        log.warning("destination registry consumer: %s", error)

    def _assign(self, consumer: Consumer) -> CatchUp | None:
        """Assign all partitions from the beginning; what there is to catch up with, or
        None if stopped before the topic could be read."""
        warned = False
        while not self._stop.is_set():
            try:
                return start_reading(consumer, self.topic, timeout=5.0)
            except TopicError as exc:
                if not warned:
                    log.warning("%s; retrying", exc)
                    warned = True
            self._stop.wait(1.0)
        return None

    def _follow(self, consumer: Consumer, progress: CatchUp) -> None:
        applied = 0
        if progress.done:
            self._mark_caught_up(applied)
        while not self._stop.is_set():
            # The first record as soon as it comes (a new destination's batch may follow it
            # at once), then whatever else is buffered already, without waiting for more.
            first = consumer.poll(self._poll_seconds)
            messages = [] if first is None else [first, *consumer.consume(_BATCH - 1, 0)]
            if not messages:
                if not progress.done:
                    note_positions(consumer, progress)
                    if progress.done:
                        self._mark_caught_up(applied)
                continue
            records: list[tuple[str, bytes | None]] = []
            for msg in messages:
                if msg.error() is not None:
                    log.debug("destination registry consumer: %s", msg.error())
                    continue
                key = msg.key()
                records.append((key.decode("utf-8", errors="replace") if key else "",
                                msg.value()))
                partition, offset = msg.partition(), msg.offset()
                if not progress.done and partition is not None and offset is not None:
                    progress.read(partition, offset)
            self._apply(records)
            applied += len(records)
            if progress.done:
                self._mark_caught_up(applied)

    def _apply(self, records: list[tuple[str, bytes | None]]) -> None:
        try:
            self.registry.apply_many(records)
        except Exception:
            log.exception("%d destination record(s) could not be applied", len(records))

    def _mark_caught_up(self, applied: int) -> None:
        if not self._caught_up.is_set():
            log.info("destination registry caught up with %s: %d record(s), %d destination(s)",
                     self.topic, applied, len(self.registry))
            self._caught_up.set()


class SharedFollower:
    """The one :class:`RegistryFollower` of a Faust app, for every stage that needs destinations.

    The composition root (``auditrelay.agents.app.create_app``) makes one per app
    and hands it to each stage's ``register``: one thread, one replica of the topic
    per worker. The follower is made on the first :meth:`get` (a worker whose
    stages need no destinations reads no topic), started by an app task, so it
    starts with the app, and stopped when that task is cancelled at app stop;
    stages wait for :attr:`RegistryFollower.caught_up` (see
    :func:`wait_until_caught_up`) before they handle their first record.
    """

    def __init__(self, app: Any, bootstrap: str, topic: str) -> None:
        self._app = app
        self._bootstrap = bootstrap
        self._topic = topic
        self._follower: RegistryFollower | None = None

    def get(self) -> RegistryFollower:
        if self._follower is not None:
            return self._follower
        follower = self._follower = RegistryFollower(self._bootstrap, self._topic)

        async def follow_destinations() -> None:
            follower.start()
            try:
                await asyncio.Event().wait()  # until the app stops and cancels this task
            finally:
                await asyncio.to_thread(follower.stop)

        self._app.task(follow_destinations)
        return follower


async def wait_until_caught_up(follower: RegistryFollower, what: str,
                               interval: float = 0.05, report_every: float = 10.0) -> None:
    """Wait on the event loop (no thread) until ``follower`` caught up; logs while waiting.

    Waits without a deadline: routing with an incomplete registry would silently
    skip destinations, and waiting leaves the events safely in Kafka.
    """
    started = last_report = time.monotonic()
    while not follower.caught_up:
        await asyncio.sleep(interval)
        now = time.monotonic()
        if now - last_report >= report_every:
            log.warning("%s is waiting for the destination registry (%s) for %.0f s",
                        what, follower.topic, now - started)
            last_report = now
