"""``AuditProducer``: the synchronous producer, with delivery callbacks and ``flush``.

``emit`` validates and queues an event and returns at once; librdkafka sends
it in the background. Outcomes arrive through ``on_delivery`` (called from
``emit``, ``poll`` and ``flush`` in the caller's thread). Without a callback,
failed deliveries are kept and ``flush``/``close`` raise one ProduceError that
counts and names them: no failure is ever silent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError as LibKafkaError
from confluent_kafka import KafkaException

from auditrelay.producer._base import ProducerCore
from auditrelay.producer.config import ProducerConfig
from auditrelay.producer.delivery import DeliveryResult, event_id_of, result_of
from auditrelay.schemas.builder import ActorLike, EncodedEvent, TargetLike
from auditrelay.schemas.catalogue import DEFAULT_CATALOGUE, Catalogue
from auditrelay.schemas.errors import ProduceError

DeliveryCallback = Callable[[DeliveryResult], None]
_NAMED_FAILURES = 5


class AuditProducer:
    """Emits audit events to Kafka; one instance per process is plenty."""

    def __init__(self, config: ProducerConfig, *, catalogue: Catalogue = DEFAULT_CATALOGUE,
                 on_delivery: DeliveryCallback | None = None) -> None:
        self._core = ProducerCore(config, catalogue)
        self._kafka = self._core.kafka
        # Bound methods looked up once: emit is the hot path.
        self._build = self._core.builder.build
        self._produce = self._kafka.produce
        self._poll = self._kafka.poll
        self._topic = config.topic
        self._on_delivery = on_delivery
        self._failures: list[DeliveryResult] = []
        self._closed = False
        self.delivered = 0
        self.failed = 0

    @property
    def config(self) -> ProducerConfig:
        return self._core.config

    def emit(self, workspace_id: str, category: str, action: str, *,
             actor: ActorLike | None = None, target: TargetLike | None = None,
             subject: str | None = None, description: str | None = None,
             metadata: Mapping[str, Any] | None = None,
             time: datetime | None = None) -> EncodedEvent:
        """Validate, build and queue one event; returns it (id, key, bytes, headers).

        Raises InvalidEventError (``field`` names the envelope attribute, e.g.
        ``data.actor``, ``workspaceid``, ``type``, ``time``, ``data.metadata``) and
        queues nothing; QueueFullError when the local queue stays full too long.
        """
        event = self._build(workspace_id, category, action, actor=actor, target=target,
                            subject=subject, description=description, metadata=metadata,
                            time=time)
        self.send(event)
        return event

    def send(self, event: EncodedEvent) -> None:
        """Queue an already built event."""
        if self._closed or self._core.fatal is not None:
            self._refuse()
        try:
            self._produce(self._topic, event.value, event.key, headers=event.headers,
                          on_delivery=self._delivered)
        except BufferError:
            self._wait_for_room(event)
        except KafkaException as exc:
            raise self._core.produce_error(event, exc) from exc
        self._poll(0)

    def _refuse(self) -> None:
        if self._closed:
            raise ProduceError("the producer is closed")
        self._core.check_usable()

    def _wait_for_room(self, event: EncodedEvent) -> None:
        deadline = time.monotonic() + self._core.config.queue_full_timeout_seconds
        produce = partial(self._kafka.produce, self._topic, event.value, event.key,
                          headers=event.headers, on_delivery=self._delivered)
        while True:
            # Serving delivery reports is what frees room in the queue.
            self._kafka.poll(0.01)
            if self._core.retry_queueing(produce, event, deadline):
                return

    def _delivered(self, err: LibKafkaError | None, msg: Any) -> None:
        if err is None:
            self.delivered += 1
            if self._on_delivery is not None:
                self._on_delivery(result_of(None, msg, event_id_of(msg)))
            return
        self.failed += 1
        result = result_of(err, msg, event_id_of(msg))
        if self._on_delivery is not None:
            self._on_delivery(result)
        else:
            self._failures.append(result)

    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery callbacks; returns how many were served."""
        served: int = self._kafka.poll(timeout)
        return served

    @property
    def pending(self) -> int:
        """Events queued or in flight, not yet confirmed or failed."""
        return len(self._kafka)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued event is confirmed or failed.

        Raises ProduceError when events are still pending after ``timeout``
        seconds, or when deliveries failed and no ``on_delivery`` callback took them.
        """
        remaining = self._kafka.flush() if timeout is None else self._kafka.flush(timeout)
        failures, self._failures = self._failures, []
        if failures:
            named = ", ".join(f.event_id for f in failures[:_NAMED_FAILURES])
            more = "" if len(failures) <= _NAMED_FAILURES else ", ..."
            raise ProduceError(
                f"{len(failures)} event(s) were not delivered ({named}{more}); "
                f"first error: {failures[0].error}"
            ) from failures[0].error
        if remaining:
            raise ProduceError(f"{remaining} event(s) still unconfirmed after {timeout:g} s")

    def take_failures(self) -> list[DeliveryResult]:
        """Failed deliveries not yet reported, removed from the producer's record."""
        failures, self._failures = self._failures, []
        return failures

    def close(self, timeout: float | None = None) -> None:
        """Flush, then refuse further events. Raises like ``flush``."""
        if self._closed:
            return
        try:
            self.flush(timeout)
        finally:
            self._closed = True

    def __enter__(self) -> AuditProducer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.close()
            return
        try:  # flush anyway, but never hide the exception already on its way out
            self.close()
        except ProduceError as flush_error:
            exc.add_note(f"while closing the producer: {flush_error}")
