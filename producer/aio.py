"""``AsyncAuditProducer``: emit from asyncio code and await the broker's confirmation.

librdkafka reports deliveries from ``poll``, which blocks; a daemon thread
polls, turns each report into a :class:`DeliveryResult`, and hands the batch
to the event loop with one ``loop.call_soon_threadsafe`` per poll (the pattern
FastStream uses), where the waiting futures are resolved.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError as LibKafkaError
from confluent_kafka import KafkaException

from auditrelay.producer._base import ProducerCore
from auditrelay.producer.config import ProducerConfig
from auditrelay.producer.delivery import DeliveryResult, result_of
from auditrelay.schemas.builder import ActorLike, EncodedEvent, TargetLike
from auditrelay.schemas.catalogue import DEFAULT_CATALOGUE, Catalogue
from auditrelay.schemas.errors import ProduceError

_POLL_SECONDS = 0.05
_ROOM_RETRY_SECONDS = 0.005

DeliveryFuture = asyncio.Future[DeliveryResult]
_Settlement = tuple[DeliveryFuture, DeliveryResult]


class AsyncAuditProducer:
    """Emits audit events from asyncio code; use as ``async with AsyncAuditProducer(cfg) as p``."""

    def __init__(self, config: ProducerConfig, *,
                 catalogue: Catalogue = DEFAULT_CATALOGUE) -> None:
        self._core = ProducerCore(config, catalogue)
        self._kafka = self._core.kafka
        self._topic = config.topic
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reports: deque[_Settlement] = deque()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._closed = False

    @property
    def config(self) -> ProducerConfig:
        return self._core.config

    async def start(self) -> None:
        """Bind to the running loop and start the poll thread (``async with`` does this)."""
        if self._poller is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._poller = threading.Thread(target=self._poll_forever,
                                        name="auditrelay-producer-poll", daemon=True)
        self._poller.start()

    async def emit(self, workspace_id: str, category: str, action: str, *,
                   actor: ActorLike | None = None, target: TargetLike | None = None,
                   subject: str | None = None, description: str | None = None,
                   metadata: Mapping[str, Any] | None = None,
                   time: datetime | None = None) -> DeliveryResult:
        """Emit one event and wait until the broker confirms it; ProduceError if it cannot."""
        future = await self.enqueue(workspace_id, category, action, actor=actor, target=target,
                                    subject=subject, description=description,
                                    metadata=metadata, time=time)
        return await future

    async def enqueue(self, workspace_id: str, category: str, action: str, *,
                      actor: ActorLike | None = None, target: TargetLike | None = None,
                      subject: str | None = None, description: str | None = None,
                      metadata: Mapping[str, Any] | None = None,
                      time: datetime | None = None) -> DeliveryFuture:
        """Emit one event without waiting for the broker; the future settles on delivery.

        Validation errors (InvalidEventError) and a queue that stays full
        (QueueFullError) are raised here; a delivery failure sets ProduceError
        on the future.
        """
        event = self._core.builder.build(
            workspace_id, category, action, actor=actor, target=target, subject=subject,
            description=description, metadata=metadata, time=time)
        return await self.send(event)

    async def send(self, event: EncodedEvent) -> DeliveryFuture:
        """Queue an already built event; returns its delivery future."""
        loop = self._running_loop()
        self._core.check_usable()
        future: DeliveryFuture = loop.create_future()
        callback = partial(self._delivered, future, event.id)
        try:
            self._kafka.produce(self._topic, event.value, event.key, headers=event.headers,
                                on_delivery=callback)
        except BufferError:
            await self._wait_for_room(event, callback)
        except KafkaException as exc:
            raise self._core.produce_error(event, exc) from exc
        return future

    async def _wait_for_room(self, event: EncodedEvent, callback: Any) -> None:
        deadline = time.monotonic() + self._core.config.queue_full_timeout_seconds
        produce = partial(self._kafka.produce, self._topic, event.value, event.key,
                          headers=event.headers, on_delivery=callback)
        while True:
            # The poll thread frees room as deliveries complete; yield meanwhile.
            await asyncio.sleep(_ROOM_RETRY_SECONDS)
            if self._core.retry_queueing(produce, event, deadline):
                return

    @property
    def pending(self) -> int:
        return len(self._kafka)

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued event is confirmed or failed (and its future settled)."""
        self._running_loop()
        remaining = await asyncio.to_thread(self._flush_blocking, timeout)
        # The settlements were scheduled before to_thread's own completion, so they
        # have run by now; one more turn of the loop covers the poll thread's last batch.
        await asyncio.sleep(0)
        if remaining:
            raise ProduceError(f"{remaining} event(s) still unconfirmed after {timeout:g} s")

    async def close(self, timeout: float | None = None) -> None:
        """Flush, stop the poll thread, refuse further events."""
        if self._closed:
            return
        try:
            if self._poller is not None:
                await self.flush(timeout)
        finally:
            self._closed = True
            self._stop.set()
            if self._poller is not None:
                await asyncio.to_thread(self._poller.join)

    async def __aenter__(self) -> AsyncAuditProducer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None:
            await self.close()
            return
        try:
            await self.close()
        except ProduceError as flush_error:
            exc.add_note(f"while closing the producer: {flush_error}")

    # -- threads --------------------------------------------------------------------------------

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._closed:
            raise ProduceError("the producer is closed")
        if self._loop is None:
            raise ProduceError("the producer is not started: use `async with` or await start()")
        return self._loop

    def _delivered(self, future: DeliveryFuture, event_id: str,
                   err: LibKafkaError | None, msg: Any) -> None:
        # Runs in whichever thread polls; only touches the thread-safe deque.
        self._reports.append((future, result_of(err, msg, event_id)))

    def _poll_forever(self) -> None:
        while not self._stop.is_set():
            self._kafka.poll(_POLL_SECONDS)
            self._dispatch()
        self._kafka.poll(0)
        self._dispatch()

    def _flush_blocking(self, timeout: float | None) -> int:
        remaining: int = self._kafka.flush() if timeout is None else self._kafka.flush(timeout)
        self._dispatch()
        return remaining

    def _dispatch(self) -> None:
        if not self._reports or self._loop is None:
            return
        batch: list[_Settlement] = []
        try:
            while True:
                batch.append(self._reports.popleft())
        except IndexError:
            pass
        # A closed loop raises RuntimeError: nobody can await these futures any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_settle, batch)


def _settle(batch: list[_Settlement]) -> None:
    for future, result in batch:
        if future.done():  # the caller cancelled its wait
            continue
        if result.error is None:
            future.set_result(result)
        else:
            future.set_exception(result.error)
