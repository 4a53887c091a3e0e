"""The one exception tree of auditrelay.

Library errors (confluent-kafka, aiokafka, httpx, SQLAlchemy, pydantic) are
translated into these at the boundary that calls the library, always with
``raise ... from exc`` so the original stays on ``__cause__``::

    AuditRelayError
    ├── ConfigurationError        a setting is missing or invalid
    ├── InvalidInputError         caller input refused; ``field`` names what is wrong
    │   ├── InvalidEventError     an audit event that breaks the envelope contract
    │   └── InvalidCursorError    a page cursor this API did not return (HTTP 400)
    ├── KafkaError                talking to Kafka failed
    │   ├── BrokerUnavailableError   no broker answered within the deadline
    │   ├── TopicError               a topic could not be created or is misconfigured
    │   └── ProduceError             a record was not confirmed by the broker
    │       └── QueueFullError          the local queue stayed full past its bound
    ├── ProvisioningError         the local toolchain or broker could not be set up
    ├── SecretDecryptError        a secret stored encrypted could not be decrypted
    ├── AuthenticationError       no valid bearer token (HTTP 401)
    ├── PermissionDeniedError     a valid token, not allowed here (HTTP 403)
    ├── NotFoundError             no such object, or not visible to this token (HTTP 404)
    ├── EntitlementError          the workspace's plan does not include this (HTTP 402)
    ├── ConflictError             the request clashes with the current state (HTTP 409)
    │   └── QuotaExceededError       a per-workspace limit is reached (HTTP 409, quota_exceeded)
    └── RateLimitedError          too many requests; ``retry_after`` seconds (HTTP 429)

Messages never contain secrets: an error names the field or setting, never its
value when that value may be a token, a key or a signing secret.
"""

from __future__ import annotations


class AuditRelayError(Exception):
    """Root of every error auditrelay raises on purpose."""


class ConfigurationError(AuditRelayError):
    """A setting is missing or has an invalid value."""


class InvalidInputError(AuditRelayError):
    """Input from a caller was refused; nothing was written anywhere."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidEventError(InvalidInputError):
    """An audit event does not satisfy the envelope contract."""


class InvalidCursorError(InvalidInputError):
    """A page cursor that does not decode into a position of the list it pages."""


class KafkaError(AuditRelayError):
    """Talking to Kafka failed."""


class BrokerUnavailableError(KafkaError):
    """No broker answered within the deadline."""


class TopicError(KafkaError):
    """A topic could not be created, or its configuration differs from the contract."""


class ProduceError(KafkaError):
    """A record was not confirmed by the broker."""


class QueueFullError(ProduceError):
    """The producer's local queue stayed full for longer than the allowed wait."""


class ProvisioningError(AuditRelayError):
    """Java, Maven, the Kafka jars or the local broker could not be set up."""


class SecretDecryptError(AuditRelayError):
    """A value encrypted at rest could not be decrypted: wrong key, or corrupted data.

    The message never contains the ciphertext, the plaintext or the key.
    """


class AuthenticationError(AuditRelayError):
    """The request carries no valid bearer token."""


class PermissionDeniedError(AuditRelayError):
    """The token is valid but may not do this."""


class NotFoundError(AuditRelayError):
    """No such object, or none that this token may see (the two look the same)."""


class EntitlementError(AuditRelayError):
    """The workspace's plan does not include the feature asked for."""


class ConflictError(AuditRelayError):
    """The request clashes with the current state of the object."""


class QuotaExceededError(ConflictError):
    """A per-workspace limit (tokens, destinations, ...) is reached; the message names it."""


class RateLimitedError(AuditRelayError):
    """Too many requests of one kind from one caller; ``retry_after`` says how long to wait."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
