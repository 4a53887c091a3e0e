"""The producer's own configuration object; services build it, nothing reads the environment.

``ProducerConfig.from_settings`` is for auditrelay's own entry points (the CLI),
which read ``AUDITRELAY_*`` once into :class:`~auditrelay.schemas.settings.Settings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from auditrelay.schemas.envelope import DEFAULT_TYPE_PREFIX
from auditrelay.schemas.settings import Settings

#: librdkafka settings that carry the producer's delivery guarantees; not overridable.
_GUARANTEED: Final = frozenset((
    "bootstrap.servers", "enable.idempotence", "acks", "request.required.acks",
    "message.timeout.ms", "delivery.timeout.ms", "on_delivery", "error_cb",
    "max.in.flight.requests.per.connection", "max.in.flight",
))


class ProducerConfig(BaseModel):
    """How an :class:`~producer.AuditProducer` connects, and the envelope rules it applies."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bootstrap_servers: str = Field(default="127.0.0.1:9092", min_length=1)
    #: Overridable for tests and benchmarks; production writes to ``audit.events``.
    topic: str = Field(default="audit.events", pattern=r"^[a-zA-Z0-9._-]{1,249}$")
    type_prefix: str = DEFAULT_TYPE_PREFIX
    source_base_url: str = "https://app.atmos.pro"
    allow_unknown_event_types: bool = False
    client_id: str = "auditrelay-producer"
    #: librdkafka ``message.timeout.ms``: how long an event may wait for the broker
    #: (retries included) before the caller gets a ProduceError for it.
    delivery_timeout_ms: int = Field(default=120_000, ge=1_000, le=24 * 3600 * 1000)
    #: How long ``emit`` waits for room when the local queue is full, then QueueFullError.
    queue_full_timeout_seconds: float = Field(default=5.0, ge=0, le=600)
    queue_max_messages: int = Field(default=200_000, ge=1, le=10_000_000)
    queue_max_kbytes: int = Field(default=262_144, ge=1, le=2_097_151)
    linger_ms: float = Field(default=5.0, ge=0, le=1_000)
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "lz4"
    #: Further librdkafka settings (e.g. ``batch.size``); not the guaranteed ones above.
    librdkafka: Mapping[str, str | int | float | bool] = Field(default_factory=dict)

    @field_validator("librdkafka")
    @classmethod
    def _no_guarantee_overrides(
        cls, value: Mapping[str, str | int | float | bool]
    ) -> Mapping[str, str | int | float | bool]:
        clash = sorted(_GUARANTEED.intersection(value))
        if clash:
            raise ValueError(f"librdkafka settings {', '.join(clash)} are fixed by the producer")
        return value

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> ProducerConfig:
        values: dict[str, Any] = {
            "bootstrap_servers": settings.kafka_bootstrap,
            "topic": settings.topics.events,
            "type_prefix": settings.event_type_prefix,
            "source_base_url": settings.source_base_url,
            "allow_unknown_event_types": settings.allow_unknown_event_types,
        }
        values.update(overrides)
        return cls(**values)

    def kafka_config(self) -> dict[str, Any]:
        """The librdkafka configuration, guarantees last so nothing overrides them."""
        return {
            "client.id": self.client_id,
            "linger.ms": self.linger_ms,
            "compression.type": self.compression,
            "queue.buffering.max.messages": self.queue_max_messages,
            "queue.buffering.max.kbytes": self.queue_max_kbytes,
            **self.librdkafka,
            "bootstrap.servers": self.bootstrap_servers,
            # Idempotence: broker-side dedup of retried batches, so a broker restart
            # mid-stream yields every event exactly once and in order per partition.
            "enable.idempotence": True,
            "acks": "all",
            "max.in.flight.requests.per.connection": 5,
            "message.timeout.ms": self.delivery_timeout_ms,
        }
