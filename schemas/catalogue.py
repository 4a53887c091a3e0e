"""The catalogue of known audit event types (contract section 1).

An event type is ``{prefix}.{category}.{action}``; the prefix is a setting
(``pro.atmos`` by default), so the catalogue stores categories and actions only.
Extending it means adding an ``EventType`` line to ``_KNOWN`` below (then
``python -m auditrelay.schemas.export`` regenerates the JSON Schema files and
docs/events.md), or, for a service's private types, ``DEFAULT_CATALOGUE.with_types(...)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, TypeGuard

#: Lower snake case: a letter first, then letters, digits and single underscores.
SNAKE_PATTERN: Final = r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$"
SNAKE_RE: Final = re.compile(SNAKE_PATTERN)
#: A type prefix is one or more dot-separated lower snake case labels.
_LABEL: Final = r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*"
PREFIX_RE: Final = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
MAX_NAME_LENGTH: Final = 64


def is_snake(value: object) -> TypeGuard[str]:
    return (isinstance(value, str) and len(value) <= MAX_NAME_LENGTH
            and SNAKE_RE.fullmatch(value) is not None)


@dataclass(frozen=True)
class EventType:
    """One known ``category.action`` with what it means."""

    category: str
    action: str
    description: str
    target: str = ""  # the kind of object ``data.target`` names, for the docs

    def __post_init__(self) -> None:
        for name in (self.category, self.action):
            if not is_snake(name):
                raise ValueError(f"{name!r} is not lower snake case")

    def type_name(self, prefix: str) -> str:
        return f"{prefix}.{self.category}.{self.action}"


class Catalogue:
    """An immutable set of event types, looked up by ``(category, action)``."""

    def __init__(self, types: Iterable[EventType]) -> None:
        index: dict[tuple[str, str], EventType] = {}
        for event_type in types:
            key = (event_type.category, event_type.action)
            if key in index:
                raise ValueError(f"event type {'.'.join(key)} is declared twice")
            index[key] = event_type
        self._index: Mapping[tuple[str, str], EventType] = MappingProxyType(index)

    def __iter__(self) -> Iterator[EventType]:
        return iter(self._index.values())

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def get(self, category: str, action: str) -> EventType | None:
        return self._index.get((category, action))

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t.category for t in self))

    def type_names(self, prefix: str) -> tuple[str, ...]:
        return tuple(t.type_name(prefix) for t in self)

    def with_types(self, *types: EventType) -> Catalogue:
        """A new catalogue with more types; redeclaring a known one is an error."""
        return Catalogue([*self, *types])


def _types(category: str, target: str, actions: Mapping[str, str]) -> list[EventType]:
    return [EventType(category, action, text, target) for action, text in actions.items()]


_KNOWN: Final = [
    *_types("workspace", "workspace", {
        "created": "A workspace was created.",
        "updated": "A workspace's name or settings changed.",
        "deleted": "A workspace was deleted.",
        "plan_changed": "A workspace moved to another plan.",
    }),
    *_types("team_member", "user", {
        "invited": "Someone was invited to the workspace.",
        "invitation_revoked": "A pending invitation was withdrawn.",
        "joined": "An invited person joined the workspace.",
        "removed": "A member was removed from the workspace.",
        "role_changed": "A member's role changed.",
    }),
    *_types("github", "github_installation", {
        "app_installed": "The GitHub app was installed on an organisation or account.",
        "app_uninstalled": "The GitHub app was removed.",
        "repository_added": "A repository was connected to the workspace.",
        "repository_removed": "A repository was disconnected from the workspace.",
    }),
    *_types("permission", "role", {
        "granted": "A permission was granted to a member, team or key.",
        "revoked": "A permission was revoked.",
        "role_created": "A custom role was created.",
        "role_updated": "A custom role's permissions changed.",
        "role_deleted": "A custom role was deleted.",
    }),
    *_types("schedule", "schedule", {
        "created": "A schedule was created.",
        "updated": "A schedule changed.",
        "deleted": "A schedule was deleted.",
        "enabled": "A schedule was enabled.",
        "disabled": "A schedule was disabled.",
        "triggered": "A schedule fired.",
    }),
    *_types("workflow", "workflow_run", {
        "dispatched": "A workflow run was dispatched (by hand, by an API call or by a schedule).",
        "started": "A workflow run started.",
        "succeeded": "A workflow run finished successfully.",
        "failed": "A workflow run failed.",
        "cancelled": "A workflow run was cancelled.",
        "approved": "A gated workflow step was approved.",
        "rejected": "A gated workflow step was rejected.",
    }),
    *_types("pull_request", "pull_request", {
        "opened": "A pull request was opened.",
        "updated": "New commits were pushed to a pull request.",
        "merged": "A pull request was merged.",
        "closed": "A pull request was closed without merging.",
        "commented": "auditrelay's host commented on a pull request (plan or apply result).",
    }),
    *_types("release", "release", {
        "created": "A release was created.",
        "published": "A release was published.",
        "deleted": "A release was deleted.",
    }),
    *_types("instance", "instance", {
        "created": "A stack instance was created.",
        "updated": "A stack instance's configuration changed.",
        "deleted": "A stack instance was deleted.",
        "planned": "A plan ran for an instance.",
        "applied": "Changes were applied to an instance.",
        "drift_detected": "Drift was detected on an instance.",
    }),
    *_types("lock", "lock", {
        "acquired": "A lock was taken.",
        "released": "A lock was released.",
        "force_released": "A lock held by someone else was broken.",
    }),
    *_types("auth", "session", {
        "login_succeeded": "Someone signed in.",
        "login_failed": "A sign-in attempt failed.",
        "logged_out": "Someone signed out.",
        "api_key_created": "An API key was created.",
        "api_key_revoked": "An API key was revoked.",
        "mfa_enabled": "Multi-factor authentication was enabled.",
        "mfa_disabled": "Multi-factor authentication was disabled.",
        "sso_configured": "Single sign-on was configured or changed.",
    }),
    *_types("billing", "subscription", {
        "subscription_created": "A subscription started.",
        "subscription_updated": "A subscription changed (seats, plan, period).",
        "subscription_cancelled": "A subscription was cancelled.",
        "payment_succeeded": "A payment went through.",
        "payment_failed": "A payment failed.",
        "invoice_issued": "An invoice was issued.",
    }),
    *_types("entitlement", "entitlement", {
        "granted": "A feature entitlement was granted.",
        "revoked": "A feature entitlement was revoked.",
        "updated": "An entitlement's limits changed.",
    }),
    *_types("webhook", "destination", {
        "created": "An audit-log destination was created.",
        "updated": "A destination's configuration changed.",
        "deleted": "A destination was deleted.",
        "enabled": "A destination was enabled.",
        "disabled": "A destination was disabled by a user.",
        "auto_disabled": "auditrelay disabled a destination that kept failing.",
        "secret_rotated": "A destination's signing secret was rotated.",
        "test_sent": "A test event was sent to a destination.",
    }),
]

#: Every type the contract knows; services extend it with ``with_types``.
DEFAULT_CATALOGUE: Final = Catalogue(_KNOWN)
