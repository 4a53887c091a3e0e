"""The library services embed to emit audit events (contract section 1).

Depends on ``schemas`` only, plus confluent-kafka and pydantic::

    from auditrelay.producer import AuditProducer, ProducerConfig
    from auditrelay.schemas.envelope import Actor

    with AuditProducer(ProducerConfig(bootstrap_servers="kafka:9092")) as producer:
        producer.emit("ws_xyz", "workspace", "created",
                      actor=Actor(id="usr_1", type="user"),
                      target={"type": "workspace", "id": "ws_xyz"})

``AsyncAuditProducer`` is the asyncio variant whose ``emit`` returns once the
broker confirmed the event.
"""

from auditrelay.producer.aio import AsyncAuditProducer
from auditrelay.producer.config import ProducerConfig
from auditrelay.producer.delivery import DeliveryResult
from auditrelay.producer.sync import AuditProducer
from auditrelay.schemas.builder import EncodedEvent
from auditrelay.schemas.envelope import Actor, Target

__all__ = [
    "Actor",
    "AsyncAuditProducer",
    "AuditProducer",
    "DeliveryResult",
    "EncodedEvent",
    "ProducerConfig",
    "Target",
]
