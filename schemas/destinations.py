"""The record of a destination on the compacted ``audit.destinations`` topic.

Key: the destination id. Value: this model as JSON, or a tombstone (no value)
when the destination is deleted. The management API publishes it; the router
and delivery agents materialise it. Secrets stay encrypted (``*_encrypted``):
only a process holding ``AUDITRELAY_SECRET_KEY`` can read them. The URL is one of
them: for Slack, Sumo Logic or Datadog its path or query is the credential, so
every URL travels encrypted, and what may be shown or logged of it is
:func:`url_hint` (``https://hooks.slack.com/…``) or :func:`url_origin`
(``https://hooks.slack.com``). Records published before URLs were encrypted
carry the plaintext ``url``; they are still read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DestinationConfig", "url_hint", "url_origin"]

#: What stands for a URL's hidden path and query.
ELLIPSIS = "\u2026"


def url_origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: what a log line or an error may name of it.

    Userinfo is dropped; text that is not an absolute URL gives ``…`` (nothing of it).
    """
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.isalpha():
        return ELLIPSIS
    end = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))
    authority = rest[:end].rpartition("@")[2]
    return f"{scheme.lower()}://{authority.lower()}"


def url_hint(url: str) -> str:
    """``url`` masked for reads: ``https://hooks.slack.com/…``, or the bare origin when
    the URL has no path or query beyond ``/``."""
    origin = url_origin(url)
    if origin == ELLIPSIS:
        return origin
    rest = url.partition("://")[2]
    end = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))
    return origin if rest[end:] in ("", "/") else f"{origin}/{ELLIPSIS}"


class DestinationConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    workspace_id: str
    #: The workspace's name, for receivers that show it to people (Slack).
    workspace_name: str = ""
    name: str
    #: What the receiver is (contract section 5.1): it decides the body, the auth, the
    #: limits and how answers are read. Records from before kinds are webhooks.
    kind: str = "webhook"
    #: The kind's options as the API validated them (non-secret).
    options: dict[str, Any] = Field(default_factory=dict)
    #: The kind's credentials: one JSON object, encrypted like the secrets.
    credentials_encrypted: str | None = None
    #: The URL, encrypted like the secrets (``v1:``…); read it with the box.
    url_encrypted: str | None = None
    #: The URL as reads show it (:func:`url_hint`).
    url_hint: str = ELLIPSIS
    #: The plaintext URL of records published before URLs were encrypted; never written now.
    url: str | None = None
    enabled: bool
    disabled_reason: str | None = None
    #: Globs over event types (``pro.atmos.billing.*``); empty means every type.
    event_types: tuple[str, ...] = ()
    #: Whether the workspace's plan includes forwarding; false means skip it.
    forwarding: bool = True
    headers_encrypted: str | None = None
    secret_encrypted: str
    previous_secret_encrypted: str | None = None
    previous_secret_expires_at: datetime | None = None
    #: Increases with every change; a consumer keeps the highest it saw.
    version: int = Field(ge=1)
    updated_at: datetime

    @model_validator(mode="after")
    def _has_a_url(self) -> DestinationConfig:
        if self.url_encrypted is None and self.url is None:
            raise ValueError("a destination record needs url_encrypted (or a legacy url)")
        return self
