"""The delivery side of a worker: the delivery and retry agents and what they share.

``DeliveryPipeline`` owns, per worker process, one HTTP client, one producer,
the status board and its follower, the database store (to disable
destinations) with an ``OutboxPublisher`` (so those changes reach Kafka), and
two aiokafka consumers, each with a lane per destination
(``auditrelay.kafka.keyed``): ``auditrelay.agents.delivery`` over ``audit.deliveries``
and ``audit.parked``, ``auditrelay.agents.retry`` over the retry tiers. They are
aiokafka, not Faust, consumers because a Faust stream hands its agent one record
at a time in partition order: it has no key-level lanes, and commits past
unfinished records with ``concurrency > 1`` (faust #606).

``register(app, settings)`` runs the pipeline inside the Faust worker as an app
task: it starts once the app has started, after the shared destination
registry caught up, and stops when the app stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from functools import partial
from importlib.metadata import version
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from auditrelay.agents import delivery, retry
from auditrelay.agents.dispatch import BatchProcessor, ConfigLookup, Dispatcher
from auditrelay.kafka.admin import admin_client, partitions_of
from auditrelay.kafka.clients import RecordSink, consumer, start_consumer
from auditrelay.kafka.keyed import KeyedRunner, lane_by_partition_and_key
from auditrelay.kafka.scan import last_offsets_by_key
from auditrelay.schemas.errors import TopicError
from auditrelay.schemas.settings import Settings
from auditrelay.store.engine import Store, check_database, checked_engine
from auditrelay.store.mutations import disable_destination
from auditrelay.store.outbox import OutboxPublisher
from auditrelay.tables.registry import RegistryFollower, SharedFollower, wait_until_caught_up
from auditrelay.tables.status import StatusBoard, StatusFollower, StatusPublisher
from auditrelay.wire.client import DeliveryClient, DeliveryConfig
from auditrelay.wire.retry_schedule import RetrySchedule
from auditrelay.wire.secrets import box_from_settings
from auditrelay.wire.ssrf import Resolver, system_resolver

__all__ = ["DeliveryPipeline", "check_copartitioned", "register", "running_pipeline"]

log = logging.getLogger(__name__)

_CATCH_UP_SECONDS = 30.0


class DeliveryPipeline:
    """Delivery and retry agents of one worker; ``start`` then ``stop``."""

    def __init__(self, settings: Settings, lookup: ConfigLookup, *,
                 resolver: Resolver = system_resolver, publish_outbox: bool = True,
                 rng: random.Random | None = None) -> None:
        self.settings = settings
        # First what can fail on bad settings, before any client exists to be closed.
        box = box_from_settings(settings)
        self.board = StatusBoard()
        self.store = Store(checked_engine(settings.database_url))
        self._client = DeliveryClient(DeliveryConfig.from_settings(settings), resolver=resolver)
        self._sink = RecordSink(settings.kafka_bootstrap)
        self._follower = StatusFollower(settings.kafka_bootstrap,
                                        settings.topics.delivery_status, self.board)
        self._outbox = OutboxPublisher(
            self.store, {"bootstrap.servers": settings.kafka_bootstrap,
                         "enable.idempotence": True, "client.id": "auditrelay-worker"},
            admin_client(settings.kafka_bootstrap)) if publish_outbox else None
        schedule = RetrySchedule.from_settings(settings)
        self._publisher = StatusPublisher(self._sink, settings.topics, self.board)
        self.processor = BatchProcessor(
            lookup=lookup, board=self.board,
            status=self._publisher,
            sink=self._sink,
            dispatcher=Dispatcher(self._client, box, version("auditrelay")),
            names=settings.topics, schedule=schedule, disable=self._disable,
            # Jitter spreads retries; it needs no cryptographic randomness.
            rng=rng or random.Random(), clock=time.time)  # noqa: S311
        self._runners: list[tuple[AIOKafkaConsumer, KeyedRunner]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._grace = delivery.circuit_grace(schedule.longest)

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        await self._sink.start()
        self._publisher.start()
        await self._follower.start()
        if not await self._follower.wait_caught_up(_CATCH_UP_SECONDS):
            log.warning("delivery statuses not read in %.0f s; circuits may start closed",
                        _CATCH_UP_SECONDS)
        if self._outbox is not None:
            self._outbox.start()
        await asyncio.to_thread(check_copartitioned, self.settings)
        await self._start_delivery()
        await self._start_retry()

    async def _start_delivery(self) -> None:
        settings, names = self.settings, self.settings.topics
        kafka = consumer(
            settings.kafka_bootstrap, group_id=names.delivery_group,
            client_id="auditrelay-delivery",
            session_timeout=settings.consumer_session_timeout_seconds,
            # Partition p of audit.deliveries and of audit.parked to the same worker.
            partition_assignment_strategy=(RangePartitionAssignor,))

        async def park(record: Any) -> int:
            return await self._sink.send_to(names.parked, record.partition, record.key,
                                            record.value, list(record.headers or ()))

        async def scan(parked: set[TopicPartition]) -> Mapping[tuple[int, bytes | None], int]:
            return await last_offsets_by_key(kafka, settings.kafka_bootstrap, parked)

        handler = delivery.DeliveryHandler(self.processor, self.board, self._grace, names,
                                           park=park, scan=scan)
        await self._run(kafka, KeyedRunner(
            kafka, handler, name="delivery", lane_of=lane_by_partition_and_key,
            diverter=handler, prepare=handler.prepare), [names.deliveries, names.parked])

    async def _start_retry(self) -> None:
        settings = self.settings
        kafka = consumer(settings.kafka_bootstrap, group_id=settings.topics.retry_group,
                         client_id="auditrelay-retry",
                         session_timeout=settings.consumer_session_timeout_seconds)
        await self._run(kafka, KeyedRunner(
            kafka, retry.RetryHandler(self.processor, time.time), name="retry",
            max_records=retry.MAX_WAITING), retry.retry_topics(settings.topics))

    async def _run(self, kafka: AIOKafkaConsumer, runner: KeyedRunner,
                   topics: Sequence[str]) -> None:
        await start_consumer(kafka, topics=topics, listener=runner)
        self._runners.append((kafka, runner))
        self._tasks.append(asyncio.create_task(runner.run(), name=f"{runner.name}-fetch"))

    async def stop(self) -> None:
        for _, runner in self._runners:
            runner.stop()
        for task in self._tasks:
            with contextlib.suppress(Exception):
                await task
        # Statuses held for coalescing go out now, with the latest timestamps.
        self._publisher.flush()
        for kafka, runner in self._runners:
            await runner.close()
            await kafka.stop()
        self._runners.clear()
        self._tasks.clear()
        await self._publisher.stop()
        await self._follower.stop()
        await self._sink.stop()
        await self._client.aclose()
        if self._outbox is not None:
            await asyncio.to_thread(self._outbox.stop)
        self.store.dispose()

    async def _disable(self, destination_id: str, reason: str, detail: str) -> bool:
        changed = await asyncio.to_thread(partial(
            disable_destination, self.store, self.settings, destination_id, reason,
            detail=detail))
        if self._outbox is not None:
            self._outbox.wake()
        return changed


def check_copartitioned(settings: Settings) -> None:
    """Refuse to start unless ``audit.deliveries`` and ``audit.parked`` exist with the
    same partition count: a destination's parked batches must be in its partition."""
    names = settings.topics
    admin = admin_client(settings.kafka_bootstrap)
    counts = {topic: len(partitions_of(admin, topic))
              for topic in (names.deliveries, names.parked)}
    if counts[names.deliveries] != counts[names.parked]:
        raise TopicError(
            f"{names.deliveries} has {counts[names.deliveries]} partitions and {names.parked} "
            f"{counts[names.parked]}: they must have the same count (add partitions to the "
            f"smaller one, or run `auditrelay topics ensure --fix` with "
            f"AUDITRELAY_DELIVERY_PARTITIONS at the larger)")


@contextlib.asynccontextmanager
async def running_pipeline(settings: Settings, *, resolver: Resolver = system_resolver,
                           rng: random.Random | None = None,
                           ) -> AsyncIterator[DeliveryPipeline]:
    """A pipeline with its own destination registry follower, outside Faust (tests, tools)."""
    # Before any Kafka client: a schema not at head refuses the start at once.
    await asyncio.to_thread(check_database, settings.database_url)
    follower = RegistryFollower(settings.kafka_bootstrap, settings.topics.destinations).start()
    try:
        await asyncio.to_thread(follower.wait_caught_up, _CATCH_UP_SECONDS)
        pipeline = DeliveryPipeline(settings, follower.registry, resolver=resolver, rng=rng)
        await pipeline.start()
        try:
            yield pipeline
        finally:
            await pipeline.stop()
    finally:
        await asyncio.to_thread(follower.stop)


def register(app: faust.App, settings: Settings, destinations: SharedFollower) -> None:
    """Run the delivery pipeline in this Faust app's worker, with the app's destination
    registry (``destinations``, shared with the router)."""
    # Checked now: the pipeline opens its store only once the registry caught up, in a
    # task, and a schema not at head must stop the worker's start.
    check_database(settings.database_url)
    follower = destinations.get()

    async def delivery_pipeline() -> None:
        await wait_until_caught_up(follower, "delivery")
        pipeline = DeliveryPipeline(settings, follower.registry)
        await pipeline.start()
        try:
            await asyncio.Event().wait()  # until the app stops and cancels this task
        finally:
            await pipeline.stop()

    app.task(delivery_pipeline)


