"""The one exception to a vendor kind's fixed hosts: an operator's private networks.

Kinds whose receiver lives at hosts the vendor documents (Datadog's intake hosts,
Slack's ``hooks.slack.com``) refuse every other host. Their ``check_url`` runs after
the SSRF rules (``auditrelay.wire.ssrf``), which let an IP literal in a non-global
range (loopback, RFC 1918, ...) through only when the operator listed it in
``AUDITRELAY_ALLOW_PRIVATE_CIDRS`` (empty by default). So a URL that reaches
``check_url`` with such a literal as its host was allowed by the operator, for
self-hosting (a relay or proxy of their own) and for tests (a strict fake receiver
on 127.0.0.1): it is accepted for every kind, with the kind's path rules still
applied. Names are never exempt: in production, with the setting empty, the rule
is exactly the vendor's host list.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from auditrelay.wire.ssrf import blocked_reason

__all__ = ["operator_allowed_literal"]


def operator_allowed_literal(url: str) -> bool:
    """Whether ``url`` (already past the SSRF rules) names its host by an IP address in
    a non-global range, which those rules let through only inside the operator's
    ``AUDITRELAY_ALLOW_PRIVATE_CIDRS``."""
    host = urlsplit(url).hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return blocked_reason(address) is not None
