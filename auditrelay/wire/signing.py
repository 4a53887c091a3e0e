"""Standard Webhooks signing of delivery batches (contract section 2).

Pure functions. A secret is ``whsec_`` + base64 of 32 random bytes; the HMAC
key is the decoded bytes. The signed content is ``{id}.{timestamp}.{body}`` and
the signature header carries one ``v1,<base64 HMAC-SHA256>`` per valid secret,
space-separated, so that after a rotation receivers holding either secret
verify the same delivery. Any Standard Webhooks library verifies it unchanged.

``request_headers`` is the complete header set of one attempt of a batch to a
destination; the worker's deliveries and the API's test sends both call it, so
a test send carries exactly what a real delivery does. It only decrypts (with
the box it is given) and computes: no I/O.

Errors name the secret's position, never its value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets as _random
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from ulid import ULID

from auditrelay.schemas.destinations import DestinationConfig
from auditrelay.schemas.errors import InvalidInputError

__all__ = [
    "CONTENT_TYPE",
    "SECRET_PREFIX",
    "Decrypter",
    "custom_headers",
    "decode_secret",
    "delivery_headers",
    "destination_url",
    "generate_secret",
    "new_batch_id",
    "request_headers",
    "sign",
    "signing_secrets",
]

SECRET_PREFIX = "whsec_"  # noqa: S105 - a format prefix, not a secret
CONTENT_TYPE = "application/cloudevents-batch+json"
_SECRET_BYTES = 32
# Standard Webhooks accepts keys of 24 to 64 bytes; ours are always 32.
_MIN_KEY_BYTES, _MAX_KEY_BYTES = 24, 64


def generate_secret() -> str:
    """A new signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_random.token_bytes(_SECRET_BYTES)).decode("ascii")


def decode_secret(secret: str) -> bytes:
    """The HMAC key of ``secret``; ``InvalidInputError`` if it is not a valid secret."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise InvalidInputError(f"secret must start with {SECRET_PREFIX}", field="secret")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError("secret is not valid base64", field="secret") from None
    if not _MIN_KEY_BYTES <= len(key) <= _MAX_KEY_BYTES:
        raise InvalidInputError(
            f"secret must encode {_MIN_KEY_BYTES} to {_MAX_KEY_BYTES} bytes", field="secret"
        )
    return key


def sign(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<b64>`` per secret, space-separated.

    ``secrets`` are the secrets valid now, newest first (two during the 24 hours
    after a rotation).
    """
    if isinstance(secrets, str):
        raise TypeError("secrets must be a sequence of secrets, not one string")
    if not secrets:
        raise InvalidInputError("at least one signing secret is required", field="secret")
    if not msg_id or "." in msg_id:
        # The id is a field of the signed content; a dot would make it ambiguous.
        raise InvalidInputError("msg_id must be non-empty and contain no '.'", field="msg_id")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise InvalidInputError("timestamp must be Unix seconds", field="timestamp")
    content = f"{msg_id}.{timestamp}.".encode() + body
    signatures = []
    for position, secret in enumerate(secrets):
        try:
            key = decode_secret(secret)
        except InvalidInputError as exc:
            raise InvalidInputError(
                f"signing secret #{position + 1}: {exc}", field="secret"
            ) from exc
        digest = hmac.new(key, content, hashlib.sha256).digest()
        signatures.append("v1," + base64.b64encode(digest).decode("ascii"))
    return " ".join(signatures)


def new_batch_id() -> str:
    """A batch id, ``msg_`` + ULID: time-sortable, identical on every retry of the batch."""
    return f"msg_{ULID()}"


def delivery_headers(msg_id: str, timestamp: int, signature: str, version: str) -> dict[str, str]:
    """The headers of one delivery attempt, in both ``X-Webhook-*`` and ``webhook-*`` forms."""
    values = {"Id": msg_id, "Timestamp": str(timestamp), "Signature": signature}
    headers = {f"X-Webhook-{name}": value for name, value in values.items()}
    headers.update({f"webhook-{name.lower()}": value for name, value in values.items()})
    headers["User-Agent"] = f"auditrelay/{version}"
    headers["Content-Type"] = CONTENT_TYPE
    return headers


# -- one attempt to one destination --------------------------------------------------------


class Decrypter(Protocol):
    """What the headers of an attempt need of ``auditrelay.wire.secrets.SecretBox``."""

    def decrypt(self, ciphertext: str) -> str: ...


def signing_secrets(config: DestinationConfig, box: Decrypter, now: datetime) -> list[str]:
    """The current secret, and the previous one while its 24 h overlap lasts."""
    secrets = [box.decrypt(config.secret_encrypted)]
    expires = config.previous_secret_expires_at
    if config.previous_secret_encrypted and expires is not None and now < expires:
        secrets.append(box.decrypt(config.previous_secret_encrypted))
    return secrets


def destination_url(config: DestinationConfig, box: Decrypter) -> str:
    """Where an attempt to ``config`` goes: its URL decrypted, or the plaintext ``url`` of
    a record published before URLs were encrypted."""
    if config.url_encrypted is not None:
        return box.decrypt(config.url_encrypted)
    if config.url is None:  # the model refuses such a record; kept for the type checker
        raise ValueError("the destination record has no URL")
    return config.url


def custom_headers(sealed: str | None, box: Decrypter) -> dict[str, str]:
    """A destination's custom headers from their ciphertext (``headers_encrypted``)."""
    if not sealed:
        return {}
    headers = json.loads(box.decrypt(sealed))
    if not isinstance(headers, dict):
        raise ValueError("custom headers are not a JSON object")
    return {str(k): str(v) for k, v in headers.items()}


def request_headers(config: DestinationConfig, box: Decrypter, batch_id: str, body: bytes,
                    now: datetime, version: str) -> dict[str, str]:
    """Every header of one attempt of ``body`` to ``config`` at ``now`` (contract section 2).

    Custom headers first, then the signed delivery headers, which custom headers
    may not name (``auditrelay.wire.headers``), so none is overridden.
    """
    timestamp = int(now.timestamp())
    signature = sign(signing_secrets(config, box, now), batch_id, timestamp, body)
    return {**custom_headers(config.headers_encrypted, box),
            **delivery_headers(batch_id, timestamp, signature, version)}
