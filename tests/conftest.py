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
    # xdist hands out whole files in this order: the files holding slow tests first,
    # so that no long file starts last and keeps one worker busy alone at the end.
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """``{test name}-{random}``: safe as a topic, group or app id, unique per test."""
    base = re.sub(r"[^a-zA-Z0-9]+", "-", request.node.name).strip("-")[:40]
    return f"{base}-{uuid.uuid4().hex[:10]}"
