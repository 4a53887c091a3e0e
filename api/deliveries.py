"""What the API shows of deliveries, read from Kafka as the contract says.

``DeliveryView`` follows the compacted ``audit.delivery-status`` (the latest
status of each destination, via ``auditrelay.tables.status``) and the recent part of
``audit.delivery-attempts`` (the last day, at most ``keep`` attempts per
destination, newest first). It starts in the background and retries while
Kafka is away: the API serves without it, with empty status fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError as AIOKafkaError
from pydantic import ValidationError

from auditrelay.kafka.admin import admin_client, partitions_of
from auditrelay.kafka.clients import consumer, start_consumer
from auditrelay.schemas.errors import AuditRelayError
from auditrelay.schemas.settings import Settings
from auditrelay.schemas.status import DeliveryAttempt, DestinationStatus
from auditrelay.tables.status import StatusBoard, StatusFollower

log = logging.getLogger(__name__)

_LOOKBACK_MS = 24 * 3600 * 1000
_RETRY_SECONDS = 5.0


class AttemptLog:
    """The most recent attempts per destination, from ``audit.delivery-attempts``."""

    def __init__(self, keep: int = 50) -> None:
        self._keep = keep
        self._by_destination: dict[str, deque[DeliveryAttempt]] = {}

    def add(self, value: bytes | None) -> None:
        if value is None:
            return
        try:
            attempt = DeliveryAttempt.model_validate_json(value)
        except ValidationError:
            log.warning("delivery-attempts: an unreadable record was skipped")
            return
        recent = self._by_destination.setdefault(attempt.destination_id,
                                                 deque(maxlen=self._keep))
        recent.append(attempt)

    def recent(self, destination_id: str, limit: int) -> list[DeliveryAttempt]:
        return list(reversed(self._by_destination.get(destination_id, ())))[:limit]


class DeliveryView:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.board = StatusBoard()
        self.attempts = AttemptLog()
        self._task: asyncio.Task[None] | None = None

    def status(self, destination_id: str) -> DestinationStatus | None:
        return self.board.get(destination_id)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="delivery-view")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        names = self._settings.topics
        bootstrap = self._settings.kafka_bootstrap
        while True:
            follower = StatusFollower(bootstrap, names.delivery_status, self.board,
                                      client_id="auditrelay-api-status")
            try:
                try:
                    await follower.start()
                except AuditRelayError as exc:
                    log.warning("delivery status unavailable, retrying: %s", exc)
                    await asyncio.sleep(_RETRY_SECONDS)
                    continue
                await self._follow_attempts(bootstrap, names.delivery_attempts)
            finally:
                # Also on cancellation: an unclosed aiokafka client leaks its sockets.
                await follower.stop()

    async def _follow_attempts(self, bootstrap: str, topic: str) -> None:
        while True:
            reader = consumer(bootstrap, group_id=None, client_id="auditrelay-api-attempts")
            try:
                partitions = await asyncio.to_thread(partitions_of, admin_client(bootstrap), topic)
                await start_consumer(reader)
                break
            except AuditRelayError as exc:
                log.warning("delivery attempts unavailable, retrying: %s", exc)
                await reader.stop()
                await asyncio.sleep(_RETRY_SECONDS)
            except BaseException:
                await reader.stop()
                raise
        try:
            tps = [TopicPartition(topic, p) for p in partitions]
            reader.assign(tps)
            since = int(time.time() * 1000) - _LOOKBACK_MS
            found = await reader.offsets_for_times(dict.fromkeys(tps, since))
            for tp in tps:
                offset = found.get(tp)
                if offset is None:
                    await reader.seek_to_end(tp)
                else:
                    reader.seek(tp, offset.offset)
            while True:
                try:
                    batches = await reader.getmany(timeout_ms=500)
                except AIOKafkaError as exc:
                    log.warning("delivery attempts: fetching failed: %s", exc)
                    await asyncio.sleep(1.0)
                    continue
                for records in batches.values():
                    for record in records:
                        self.attempts.add(record.value)
        finally:
            await reader.stop()
