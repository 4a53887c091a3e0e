"""The archive agent through the real broker into SQLite and PostgreSQL.

100 000 events (a few duplicates and malformed records among them) go in; the
row count equals the number of distinct valid ids; a second consumer group
replaying the topic from the beginning (its group deleted) adds no row.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import faust
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from auditrelay.agents import archive, retention
from auditrelay.agents.app import create_app
from auditrelay.kafka.admin import create_topics
from auditrelay.producer import Actor, AuditProducer, ProducerConfig
from auditrelay.schemas.settings import Settings
from auditrelay.schemas.topics import static_topic_specs
from auditrelay.store.engine import upgrade_database
from tests.integration.archive.conftest import count_rows
from tests.support.cleanup import topics_cleaned_up
from tests.support.polling import eventually
from tests.support.settings import make_settings

EVENTS = 100_000
_DEADLINE = 240.0


@pytest.fixture
def settings(kafka_bootstrap: str, kafka_admin: AdminClient, unique_name: str, db_url: str,
             tmp_path: Path) -> Iterator[Settings]:
    """Settings with a topic prefix of this test (its topics, and those of its Faust app
    ids ``test-{unique_name}...``, deleted after)."""
    prefixed = make_settings(tmp_path, kafka_bootstrap, f"test.{unique_name}.",
                             database_url=db_url, topic_partitions=6)
    with topics_cleaned_up(kafka_admin, prefixed.topics, f"test-{unique_name}"):
        create_topics(kafka_admin, [s for s in static_topic_specs(prefixed.topics, 6)
                                    if s.name == prefixed.topics.events])
        yield prefixed


def produce(settings: Settings, events: int) -> set[str]:
    """``events`` valid events, 100 of them sent twice, and 3 malformed records."""
    actor = Actor(id="usr_ingest", type="user")
    ids: set[str] = set()
    with AuditProducer(ProducerConfig.from_settings(settings)) as producer:
        for i in range(events):
            built = producer.emit(f"ws_ingest{i % 97}", "workspace", "updated", actor=actor)
            ids.add(built.id)
            if i % 1000 == 0:
                producer.send(built)  # a duplicate, as a producer retry could make
        producer.flush()
    raw = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for value in (b"not json", b'{"specversion":"1.0"}', b"\xff\xfe"):
        raw.produce(settings.topics.events, key=b"ws_bad", value=value)
    assert raw.flush(10) == 0
    return ids


async def run_archive(settings: Settings, app_id: str, done: Callable[[], bool]) -> None:
    app = create_app(settings, app_id=app_id, registrars=[archive.register])
    await app.start()
    try:
        await eventually(done, _DEADLINE, f"{app_id} caught up", interval=0.2)
    finally:
        await app.stop()


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.asyncio
async def test_hundred_thousand_events_archived_once_and_replay_adds_nothing(
        settings: Settings, unique_name: str, monkeypatch: pytest.MonkeyPatch,
        kafka_admin: AdminClient) -> None:
    ids = await asyncio.to_thread(produce, settings, EVENTS)
    seen: list[int] = []
    real_write = archive.ArchiveWriter.write

    def counting_write(self: archive.ArchiveWriter, rows: Sequence[archive.Row]) -> None:
        real_write(self, rows)
        seen.append(len(rows))

    monkeypatch.setattr(archive.ArchiveWriter, "write", counting_write)
    from auditrelay.store.engine import make_engine

    engine = make_engine(settings.database_url)
    try:
        await run_archive(settings, f"test-{unique_name}-a",
                          lambda: sum(seen) >= EVENTS + 100 and count_rows(engine) >= len(ids))
        assert count_rows(engine) == len(ids) == EVENTS

        # Without its committed offsets the group starts at the beginning: everything again.
        group = settings.topics.archive_group
        kafka_admin.delete_consumer_groups([group])[group].result(timeout=30)
        seen.clear()
        await run_archive(settings, f"test-{unique_name}-b", lambda: sum(seen) >= EVENTS + 100)
        assert sum(seen) == EVENTS + 100
        assert count_rows(engine) == EVENTS
    finally:
        engine.dispose()


@pytest.mark.asyncio
async def test_worker_with_the_leader_only_crontab_starts_and_is_leader(
        settings: Settings, unique_name: str, kafka_admin: AdminClient) -> None:
    app: faust.App = create_app(settings, app_id=f"test-{unique_name}",
                                registrars=[archive.register, retention.register])
    assert app.conf.topic_disable_leader is False
    leader_topic = f"test-{unique_name}-__assignor-__leader"
    await app.start()
    try:
        await eventually(lambda: bool(app.is_leader()), 60, "leadership", interval=0.2)
        assert leader_topic in kafka_admin.list_topics(timeout=10).topics
    finally:
        await app.stop()


@pytest.mark.asyncio
async def test_scheduled_purge_logs_and_never_raises(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    broken = Settings(database_url=f"sqlite:///{tmp_path}/missing-dir/{uuid.uuid4()}/x.db/..",
                      var_dir=tmp_path)
    assert await retention.run_scheduled_purge(broken) is None
    assert "daily purge failed" in caplog.text
    fine = Settings(database_url=f"sqlite:///{tmp_path}/ok.db", var_dir=tmp_path)
    upgrade_database(fine.database_url)
    report = await retention.run_scheduled_purge(fine)
    assert report is not None
    assert report.deleted == 0
