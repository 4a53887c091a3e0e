"""Fixtures for every test: a per-test unique name, and the marker rules.

Tests under ``tests/integration`` are marked ``broker`` automatically; they get
the real Kafka broker from the session fixture in that folder's conftest. The
controlling process stops, at the end, the servers the session's workers started
(tests/support/services.py).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest

from auditrelay.ops.kafka_local import LocalKafka
from auditrelay.ops.postgres_local import LocalPostgres
from auditrelay.schemas.settings import Settings
from tests.support.services import begin_session, end_session

_INTEGRATION = Path(__file__).parent / "integration"


def _controls(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput")  # an xdist worker has it


def pytest_configure(config: pytest.Config) -> None:
    if _controls(config):
        begin_session()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _controls(config):
        end_session({"kafka": lambda: LocalKafka.from_settings(Settings()).down(),
                     "postgres": lambda: LocalPostgres.from_settings(Settings()).down()})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _INTEGRATION in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.broker)
    # xdist hands out whole files in this order: the longest first (longest processing
    # time first), so that no long file starts last and keeps one worker busy alone at
    # the end. A test's own timeout says how long it may take; a slow one without says
    # little, a quick one nothing.
    weight: dict[Path, float] = {}
    for item in items:
        weight[item.path] = weight.get(item.path, 0.0) + _expected_seconds(item)
    items.sort(key=lambda item: -weight[item.path])


def _expected_seconds(item: pytest.Item) -> float:
    timeout = item.get_closest_marker("timeout")
    if timeout is not None and timeout.args:
        return float(timeout.args[0])
    return 30.0 if item.get_closest_marker("slow") else 0.1


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """``{test name}-{random}``: safe as a topic, group or app id, unique per test."""
    base = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name).strip("-")[:40]
    return f"{base}-{uuid.uuid4().hex[:10]}"
