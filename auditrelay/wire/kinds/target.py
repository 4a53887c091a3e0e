"""A destination's record made ready for an attempt: its kind, and a ``Target`` with
URL, credentials and custom headers decrypted, options validated.

Shared by the worker's deliveries and the API's test sends, so that a test send is
what a delivery is. Errors (a lost key, a record no kind accepts) name no secret.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

from auditrelay.schemas.destinations import DestinationConfig
from auditrelay.schemas.errors import InvalidInputError
from auditrelay.wire.kinds import kind_named
from auditrelay.wire.kinds.base import Kind, Target
from auditrelay.wire.signing import Decrypter, custom_headers, destination_url, signing_secrets

__all__ = ["credentials_of", "target_of"]


def credentials_of(sealed: str | None, box: Decrypter) -> dict[str, str]:
    """A destination's credentials from their ciphertext (``credentials_encrypted``)."""
    if not sealed:
        return {}
    value = json.loads(box.decrypt(sealed))
    if not isinstance(value, dict):
        raise ValueError("the credentials are not a JSON object")
    return {str(k): str(v) for k, v in value.items()}


def target_of(config: DestinationConfig, box: Decrypter, now: Callable[[], datetime],
              version: str) -> tuple[Kind, Target]:
    """``config``'s kind and target; ``InvalidInputError`` or ``ValueError`` when the
    record cannot be used (unknown kind, options the kind refuses, undecryptable)."""
    kind = kind_named(config.kind)
    try:
        options = kind.options(config.options)
    except ValueError as exc:  # pydantic's ValidationError names fields, never values
        raise InvalidInputError(f"the {config.kind} options are not valid: "
                                f"{_fields(exc)}", field="options") from None
    return kind, Target(
        config=config,
        url=destination_url(config, box),
        options=options,
        credentials=credentials_of(config.credentials_encrypted, box),
        custom_headers=custom_headers(config.headers_encrypted, box),
        secrets=lambda at: signing_secrets(config, box, at),
        now=now,
        version=version,
    )


def _fields(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return "invalid"
    return ", ".join(".".join(str(p) for p in error.get("loc", ())) or "options"
                     for error in errors()) or "invalid"
