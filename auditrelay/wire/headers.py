"""Validation of a destination's custom HTTP headers (contract section 2).

Pure. Refused, with ``InvalidInputError(field="headers.<Name>")``:

- names that are not RFC 9110 tokens;
- reserved names, case-insensitively: the ones auditrelay sets itself or that
  steer the connection (``Authorization``, ``Content-*`` we send, ``Host``,
  ``User-Agent``, hop-by-hop headers, ``Proxy-*``) and the prefixes
  ``X-Webhook-``, ``webhook-`` and ``ce-``;
- the same name twice in different case;
- values with anything but visible ASCII, space and tab (CR, LF and NUL above
  all), or with leading or trailing whitespace, which HTTP would strip;
- more than 20 headers, or more than 8 KiB in all, counted as the sum over
  headers of ``len(name) + len(value)`` in UTF-8 bytes.

Header values may be credentials, so messages never contain a value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from auditrelay.schemas.errors import InvalidInputError

__all__ = ["MAX_HEADERS", "MAX_TOTAL_BYTES", "is_reserved", "validate_custom_headers"]

MAX_HEADERS = 20
MAX_TOTAL_BYTES = 8 * 1024

_RESERVED = frozenset({
    "authorization", "content-type", "content-length", "content-encoding", "host",
    "user-agent", "connection", "keep-alive", "transfer-encoding", "te", "trailer",
    "upgrade", "proxy",
})
_RESERVED_PREFIXES = ("proxy-", "x-webhook-", "webhook-", "ce-")
# RFC 9110 section 5.6.2: token = 1*tchar.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 section 5.5 field-value, restricted to ASCII: VCHAR, SP, HTAB.
_VALUE = re.compile(r"[\t\x20-\x7e]*")
_MAX_NAME_IN_MESSAGE = 64


def is_reserved(name: str) -> bool:
    """Whether ``name`` is a header auditrelay owns (case-insensitive)."""
    lowered = name.lower()
    return lowered in _RESERVED or lowered.startswith(_RESERVED_PREFIXES)


def _shown(name: str) -> str:
    # A refused name may hold CR/LF; escape it so messages and logs stay one line.
    escaped = name.encode("unicode_escape").decode("ascii")
    if len(escaped) > _MAX_NAME_IN_MESSAGE:
        escaped = escaped[:_MAX_NAME_IN_MESSAGE] + "..."
    return escaped


def validate_custom_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Return a plain copy of ``headers`` if every rule holds, else raise."""
    if len(headers) > MAX_HEADERS:
        raise InvalidInputError(
            f"headers: at most {MAX_HEADERS} custom headers are allowed, got {len(headers)}",
            field="headers",
        )
    seen: set[str] = set()
    total = 0
    for name, value in headers.items():
        shown = _shown(name) if isinstance(name, str) else "?"
        field = f"headers.{shown}"
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise InvalidInputError(
                f"{field}: header name must be an RFC 9110 token "
                "(letters, digits and !#$%&'*+-.^_`|~)",
                field=field,
            )
        if is_reserved(name):
            raise InvalidInputError(
                f"{field}: header {name} is reserved and set by auditrelay itself", field=field
            )
        if name.lower() in seen:
            raise InvalidInputError(
                f"{field}: header {name} is given twice (names are case-insensitive)", field=field
            )
        seen.add(name.lower())
        if not isinstance(value, str):
            raise InvalidInputError(f"{field}: header value must be a string", field=field)
        if not _VALUE.fullmatch(value):
            raise InvalidInputError(
                f"{field}: header value may contain only visible ASCII, space and tab "
                "(no CR, LF, NUL or other control characters)",
                field=field,
            )
        if value != value.strip(" \t"):
            raise InvalidInputError(
                f"{field}: header value must not start or end with whitespace", field=field
            )
        total += len(name.encode()) + len(value.encode())
    if total > MAX_TOTAL_BYTES:
        raise InvalidInputError(
            f"headers: custom headers take {total} bytes, more than {MAX_TOTAL_BYTES} "
            "(sum of name and value lengths)",
            field="headers",
        )
    return dict(headers)
