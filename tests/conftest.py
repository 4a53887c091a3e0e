"""Fixtures for every test: a per-test unique name, and the marker rules.

Tests under ``tests/integration`` are marked ``broker`` automatically; they get
the real Kafka broker from the session fixture in that folder's conftest.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

_INTEGRATION = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _INTEGRATION in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.broker)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """``{test name}-{random}``: safe as a topic, group or app id, unique per test."""
    base = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name).strip("-")[:40]
    return f"{base}-{uuid.uuid4().hex[:10]}"
