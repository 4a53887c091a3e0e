"""The destination kinds (contract section 5.1), by name.

Adding a kind: a module beside these with one ``Kind`` subclass (see
``auditrelay.wire.kinds.base``), an instance of it in ``KINDS`` below, a strict
fake of the receiver in ``tests/support/receivers/`` and its tests; docs/architecture.md
and docs/destinations.md say the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from auditrelay.schemas.errors import InvalidInputError
from auditrelay.wire.kinds.base import Kind
from auditrelay.wire.kinds.datadog import Datadog
from auditrelay.wire.kinds.elasticsearch import Elasticsearch
from auditrelay.wire.kinds.slack import Slack
from auditrelay.wire.kinds.splunk_hec import SplunkHec
from auditrelay.wire.kinds.sumo_logic import SumoLogic
from auditrelay.wire.kinds.webhook import Webhook

__all__ = ["DEFAULT_KIND", "KINDS", "kind_named", "kind_options", "signed"]

DEFAULT_KIND = "webhook"

KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Webhook(),
    SplunkHec(),
    Datadog(),
    SumoLogic(),
    Elasticsearch(),
    Slack(),
)}


def kind_named(name: str) -> Kind:
    """The kind called ``name``; ``InvalidInputError(field="kind")`` naming the known ones."""
    kind = KINDS.get(name)
    if kind is None:
        known = ", ".join(sorted(KINDS))
        raise InvalidInputError(f"kind: unknown destination kind {name[:40]!r}; known kinds: "
                                f"{known}", field="kind")
    return kind


def signed(kind: str) -> bool:
    """Whether destinations of ``kind`` are signed (and so have a secret to show)."""
    return kind == DEFAULT_KIND


def kind_options(kind: Kind, raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` validated as ``kind``'s options, as stored (JSON, defaults filled in);
    ``InvalidInputError(field="options.<name>")`` naming the first problem."""
    try:
        return kind.options(raw).model_dump(mode="json")
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(step) for step in error.get("loc", ())) or "options"
        if error.get("type") == "extra_forbidden":
            known = ", ".join(kind.Options.model_fields) or "none"
            message = f"a {kind.name} destination takes no such option (it takes: {known})"
        else:
            message = error.get("msg", "invalid")
        raise InvalidInputError(f"options.{name[:40]}: {message}",
                                field=f"options.{name[:40]}") from None
