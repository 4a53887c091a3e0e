"""`auditrelay dlq list|replay` against the real broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from auditrelay.kafka.topic_reader import read_topic
from auditrelay.ops.cli import cli
from auditrelay.ops.topics import ensure_topics
from auditrelay.schemas.batches import REASON_EXHAUSTED, REASON_MALFORMED, BatchMeta
from auditrelay.schemas.settings import Settings
from tests.support.cleanup import topics_cleaned_up
from tests.support.settings import make_settings


@pytest.fixture
def dlq_env(kafka_bootstrap: str, kafka_admin: AdminClient, unique_name: str,
            tmp_path: Path) -> Iterator[tuple[Settings, dict[str, str]]]:
    settings = make_settings(tmp_path, kafka_bootstrap, f"test.{unique_name}.",
                             topic_partitions=2)
    with topics_cleaned_up(kafka_admin, settings.topics):
        ensure_topics(settings)
        # dst_a exists (its config is on the compacted topic); dst_b was deleted.
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        producer.produce(settings.topics.destinations, key=b"dst_a", value=b'{"id": "dst_a"}')
        producer.produce(settings.topics.destinations, key=b"dst_b", value=b'{"id": "dst_b"}')
        producer.produce(settings.topics.destinations, key=b"dst_b", value=None)
        assert producer.flush(10) == 0
        env = {"AUDITRELAY_KAFKA_BOOTSTRAP": kafka_bootstrap,
               "AUDITRELAY_TOPIC_PREFIX": settings.topic_prefix}
        yield settings, env


def _dead(dest: str, batch: str, reason: str) -> tuple[bytes, list[tuple[str, bytes]]]:
    meta = BatchMeta(batch, dest, "ws_one", 2, 1_700_000_000_000, attempt=7,
                     first_attempt_ms=1_700_000_000_500, last_error="503", reason=reason,
                     detail="gave up after 72 h")
    return b'[{"id":"aud_1"},{"id":"aud_2"}]', meta.headers()


def test_list_then_replay_each_batch_once(dlq_env: tuple[Settings, dict[str, str]]) -> None:
    settings, env = dlq_env
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    for dest, batch in (("dst_a", "msg_a1"), ("dst_b", "msg_b1"), ("dst_a", "msg_a2")):
        value, headers = _dead(dest, batch, REASON_EXHAUSTED)
        producer.produce(settings.topics.dlq, key=dest.encode(), value=value, headers=headers)
    producer.produce(settings.topics.dlq, key=b"ws_one", value=b"{not json",
                     headers=[("ar_reason", REASON_MALFORMED.encode()),
                              ("ar_detail", b"body is not JSON")])
    assert producer.flush(10) == 0

    listed = CliRunner().invoke(cli, ["dlq", "list"], env=env, catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    assert "4 record(s)" in listed.output
    assert "msg_b1" in listed.output
    assert "retries_exhausted: gave up after 72 h" in listed.output
    assert "malformed_event: body is not JSON" in listed.output

    only_a = CliRunner().invoke(cli, ["dlq", "list", "--destination", "dst_a"], env=env)
    assert "2 record(s)" in only_a.output
    assert "msg_b1" not in only_a.output

    replay = CliRunner().invoke(cli, ["dlq", "replay", "--destination", "dst_a"], env=env,
                                catch_exceptions=False)
    assert replay.exit_code == 0, replay.output
    assert (f"replayed 2 batch(es) to {settings.topics.deliveries} (key dst_a)"
            in replay.output)
    again = CliRunner().invoke(cli, ["dlq", "replay", "--destination", "dst_a"], env=env,
                               catch_exceptions=False)
    assert "replayed 0 batch(es)" in again.output

    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": "check",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([settings.topics.deliveries])
    replayed: list[BatchMeta] = []
    try:
        for _ in range(100):
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                assert msg.key() == b"dst_a"
                assert msg.value() == b'[{"id":"aud_1"},{"id":"aud_2"}]'
                replayed.append(BatchMeta.from_headers(msg.headers()))
            if len(replayed) == 2 and msg is None:
                break
    finally:
        consumer.close()
    assert [m.batch_id for m in replayed] == ["msg_a1", "msg_a2"]
    assert all(m.attempt == 0 and m.reason == "" and m.first_event_ms == 1_700_000_000_000
               for m in replayed)


def test_replay_refuses_a_destination_without_a_config(
        dlq_env: tuple[Settings, dict[str, str]]) -> None:
    settings, env = dlq_env
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    value, headers = _dead("dst_b", "msg_b1", REASON_EXHAUSTED)
    producer.produce(settings.topics.dlq, key=b"dst_b", value=value, headers=headers)
    assert producer.flush(10) == 0
    for gone in ("dst_b", "dst_never"):  # a tombstone, no record at all
        refused = CliRunner().invoke(cli, ["dlq", "replay", "--destination", gone], env=env)
        assert refused.exit_code == 1, refused.output
        assert f"{gone} has no config on {settings.topics.destinations}" in refused.output
    assert read_topic(settings.kafka_bootstrap, settings.topics.deliveries) == []
