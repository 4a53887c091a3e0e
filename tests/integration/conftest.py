"""The real Kafka broker, shared by the session, and per-test topics and groups.

The broker is the project's own (``auditrelay kafka up``): reused when one already
answers, started otherwise (once for all xdist workers) and then stopped when the
session ends (tests/support/services.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from confluent_kafka.admin import AdminClient

from auditrelay.kafka.admin import admin_client, create_topics, delete_topics
from auditrelay.ops import kafka_local
from auditrelay.schemas.settings import Settings
from auditrelay.schemas.topics import TopicSpec
from tests.support.polling import wait_until
from tests.support.services import start_once

TopicFactory = Callable[..., str]


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    settings = Settings()  # tests are an entry point: they read AUDITRELAY_* once
    if kafka_local.broker_answers(settings.kafka_bootstrap):
        return settings.kafka_bootstrap
    broker = kafka_local.LocalKafka.from_settings(settings)
    start_once("kafka", broker.up)  # stopped by tests/conftest.py when the session ends
    return broker.bootstrap


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> AdminClient:
    return admin_client(kafka_bootstrap)


@pytest.fixture
def make_topic(kafka_admin: AdminClient, unique_name: str) -> Iterator[TopicFactory]:
    """Creates topics named after the test, unique per call; deletes them afterwards."""
    created: list[str] = []

    def _make(suffix: str = "t", partitions: int = 3, **config: str) -> str:
        name = f"test.{unique_name}.{suffix}"
        create_topics(kafka_admin, [TopicSpec(name, partitions, config)])
        created.append(name)
        # The controller answers before every broker's metadata has the topic; a test
        # that describes it at once could be told it does not exist.
        wait_until(lambda: len(kafka_admin.list_topics(name, timeout=10).topics[name]
                               .partitions) == partitions, 30, f"{name} listed")
        return name

    yield _make
    delete_topics(kafka_admin, created)


@pytest.fixture
def topic(make_topic: TopicFactory) -> str:
    """One fresh 3-partition topic for this test."""
    return make_topic()


@pytest.fixture
def group_id(unique_name: str) -> str:
    """A consumer group id no other test uses."""
    return f"test-group-{unique_name}"
