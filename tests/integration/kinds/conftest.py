"""The end-to-end tests of the destination kinds: each test's settings, with the
contract's topics on the real broker (deleted afterwards)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from auditrelay.schemas.settings import Settings
from tests.support.e2e import scenario


@pytest.fixture
def settings(kafka_bootstrap: str, kafka_admin: AdminClient, unique_name: str,
             tmp_path: Path) -> Iterator[Settings]:
    with scenario(kafka_bootstrap, kafka_admin, unique_name, tmp_path) as settings:
        yield settings
