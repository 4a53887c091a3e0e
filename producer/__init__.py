"""The library services embed to emit audit events (contract section 1).

Depends on ``schemas`` only, plus confluent-kafka and pydantic::

    from producer import AuditProducer, ProducerConfig
    from schemas.envelope import Actor

    with AuditProducer(ProducerConfig(bootstrap_servers="kafka:9092")) as producer:
        producer.emit("ws_xyz", "workspace", "created",
                      actor=Actor(id="usr_1", type="user"),
                      target={"type": "workspace", "id": "ws_xyz"})

``AsyncAuditProducer`` is the asyncio variant whose ``emit`` returns once the
broker confirmed the event.
"""

from producer.aio import AsyncAuditProducer
from producer.config import ProducerConfig
from producer.delivery import DeliveryResult
from producer.sync import AuditProducer
from schemas.builder import EncodedEvent
from schemas.envelope import Actor, Target

__all__ = [
    "Actor",
    "AsyncAuditProducer",
    "AuditProducer",
    "DeliveryResult",
    "EncodedEvent",
    "ProducerConfig",
    "Target",
]
