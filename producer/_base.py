"""What the synchronous and the asyncio producer share: the builder, librdkafka, errors."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from confluent_kafka import KafkaError as LibKafkaError
from confluent_kafka import KafkaException, Producer

from auditrelay.producer.config import ProducerConfig
from auditrelay.producer.librdkafka_log import librdkafka_logger
from auditrelay.schemas.builder import ActorLike, EncodedEvent, EventBuilder, TargetLike
from auditrelay.schemas.catalogue import DEFAULT_CATALOGUE, Catalogue
from auditrelay.schemas.errors import ConfigurationError, ProduceError, QueueFullError

_log = logging.getLogger("auditrelay.producer")


class ProducerCore:
    """The librdkafka producer and the event builder of one configuration."""

    def __init__(self, config: ProducerConfig, catalogue: Catalogue = DEFAULT_CATALOGUE) -> None:
        self.config = config
        self.topic = config.topic
        try:
            self.builder = EventBuilder(
                type_prefix=config.type_prefix, source_base_url=config.source_base_url,
                catalogue=catalogue, allow_unknown_types=config.allow_unknown_event_types,
            )
        except ValueError as exc:
            raise ConfigurationError(f"invalid producer config: {exc}") from exc
        self.fatal: ProduceError | None = None
        try:
            self.kafka = Producer({**config.kafka_config(), "error_cb": self._on_error,
                                   "logger": librdkafka_logger("auditrelay.producer.librdkafka")})
        except KafkaException as exc:
            raise ConfigurationError(f"invalid librdkafka setting: {exc}") from exc

    def build(self, workspace_id: str, category: str, action: str, *,
              actor: ActorLike | None, target: TargetLike | None, subject: str | None,
              description: str | None, metadata: Mapping[str, Any] | None,
              time: datetime | None) -> EncodedEvent:
        return self.builder.build(workspace_id, category, action, actor=actor, target=target,
                                  subject=subject, description=description, metadata=metadata,
                                  time=time)

    def check_usable(self) -> None:
        if self.fatal is not None:
            raise ProduceError(f"the producer failed for good: {self.fatal}") from self.fatal

    def queue_full(self, event: EncodedEvent) -> QueueFullError:
        return QueueFullError(
            f"event {event.id} not queued: the local queue stayed full for "
            f"{self.config.queue_full_timeout_seconds:g} s ({len(self.kafka)} events wait for "
            "the broker); is the broker reachable?"
        )

    def produce_error(self, event: EncodedEvent, exc: KafkaException) -> ProduceError:
        return ProduceError(f"event {event.id} not queued: {exc}")

    def retry_queueing(self, produce: Callable[[], None], event: EncodedEvent,
                       deadline: float) -> bool:
        """One more try of a produce that found the local queue full; True once queued.

        Past ``deadline`` (``time.monotonic()``) a still-full queue is QueueFullError.
        """
        try:
            produce()
        except BufferError as exc:
            if time.monotonic() >= deadline:
                raise self.queue_full(event) from exc
            return False
        except KafkaException as exc:
            raise self.produce_error(event, exc) from exc
        return True

    def _on_error(self, err: LibKafkaError) -> None:
        # Transient errors (broker down, all brokers down) are retried by librdkafka
        # until message.timeout.ms; only fatal ones (idempotence broken) end the producer.
        if err.fatal():
            self.fatal = ProduceError(f"fatal producer error: {err.name()}: {err.str()}")
            self.fatal.__cause__ = KafkaException(err)
            _log.error("fatal Kafka producer error: %s", err.str())
        else:
            _log.warning("Kafka producer: %s", err.str())
