"""The catalogue of event types."""

from __future__ import annotations

import pytest

from auditrelay.schemas.catalogue import DEFAULT_CATALOGUE, Catalogue, EventType

CONTRACT_CATEGORIES = {
    "workspace", "team_member", "github", "permission", "schedule", "workflow",
    "pull_request", "release", "instance", "lock", "auth", "billing", "entitlement", "webhook",
}
WEBHOOK_ACTIONS = {"created", "updated", "deleted", "enabled", "disabled", "auto_disabled",
                   "secret_rotated", "test_sent"}


def test_catalogue_has_every_category_of_the_contract() -> None:
    assert set(DEFAULT_CATALOGUE.categories) >= CONTRACT_CATEGORIES


def test_catalogue_has_auditrelays_own_lifecycle_events() -> None:
    actions = {t.action for t in DEFAULT_CATALOGUE if t.category == "webhook"}
    assert actions >= WEBHOOK_ACTIONS


def test_type_names_use_the_prefix() -> None:
    names = DEFAULT_CATALOGUE.type_names("pro.atmos")
    assert "pro.atmos.workspace.created" in names
    assert "pro.atmos.webhook.auto_disabled" in names
    assert len(set(names)) == len(DEFAULT_CATALOGUE)


def test_with_types_extends_without_changing_the_default() -> None:
    extended = DEFAULT_CATALOGUE.with_types(EventType("billing", "refund_issued", "A refund."))
    assert extended.get("billing", "refund_issued") is not None
    assert DEFAULT_CATALOGUE.get("billing", "refund_issued") is None


def test_a_type_declared_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        Catalogue([EventType("lock", "acquired", "a"), EventType("lock", "acquired", "b")])


@pytest.mark.parametrize(("category", "action"), [
    ("Lock", "acquired"), ("lock", "Acquired"), ("lock", "force-released"), ("lock", "_x"),
    ("lock", "a__b"), ("1lock", "x"), ("lock", ""),
])
def test_names_must_be_lower_snake_case(category: str, action: str) -> None:
    with pytest.raises(ValueError, match="snake case"):
        EventType(category, action, "bad")
