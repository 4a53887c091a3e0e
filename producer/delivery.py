"""What the broker said about one event, and the one place confluent-kafka errors are translated."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from confluent_kafka import KafkaError as LibKafkaError
from confluent_kafka import KafkaException

from auditrelay.schemas.errors import ProduceError


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The outcome for one event: where it landed, or why it did not."""

    event_id: str
    topic: str
    partition: int | None
    offset: int | None
    error: ProduceError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


#: Canonical events start with these bytes, then the 30-character id (auditrelay.schemas.codec).
_ID_AT: Final = b'{"specversion":"1.0","id":"'
_ID_END: Final = len(_ID_AT) + 30


def event_id_of(msg: Any) -> str:
    """The id of a produced event, read back from the record.

    librdkafka hands failed records back without their headers, so the id is
    read from the value, where the canonical form puts it at a fixed offset;
    this keeps the hot path free of a per-record callback closure.
    """
    value = msg.value()
    if value and value.startswith(_ID_AT):
        return str(value[len(_ID_AT):_ID_END].decode("ascii", "replace"))
    for name, header in msg.headers() or []:
        if name == "ce_id":
            return bytes(header).decode("ascii", "replace")
    return "(unknown)"


def delivery_error(err: LibKafkaError, event_id: str) -> ProduceError:
    """A librdkafka delivery error as our ProduceError (the original stays on ``__cause__``)."""
    error = ProduceError(f"event {event_id} was not delivered: {err.name()}: {err.str()}")
    error.__cause__ = KafkaException(err)
    return error


def result_of(err: LibKafkaError | None, msg: Any, event_id: str) -> DeliveryResult:
    if err is None:
        return DeliveryResult(event_id, msg.topic(), msg.partition(), msg.offset())
    return DeliveryResult(event_id, msg.topic(), None, None, delivery_error(err, event_id))

