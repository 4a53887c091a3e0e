"""`auditrelay status` reads the real status and destination topics."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from auditrelay.ops.cli import cli
from auditrelay.ops.topics import ensure_topics
from auditrelay.schemas.destinations import DestinationConfig
from auditrelay.schemas.status import DestinationStatus
from tests.support.cleanup import topics_cleaned_up
from tests.support.settings import make_settings


def test_status_table(kafka_bootstrap: str, kafka_admin: AdminClient, unique_name: str,
                      tmp_path: Path) -> None:
    settings = make_settings(tmp_path, kafka_bootstrap, f"test.{unique_name}.",
                             topic_partitions=1)
    with topics_cleaned_up(kafka_admin, settings.topics):
        ensure_topics(settings)
        now = datetime.now(UTC)
        producer = Producer({"bootstrap.servers": kafka_bootstrap})
        for ws, dest in (("ws_a", "dst_a"), ("ws_b", "dst_b")):
            config = DestinationConfig(id=dest, workspace_id=ws, name=f"siem-{ws}",
                                       url="https://x.example.com/", enabled=True,
                                       secret_encrypted="v1:x", version=1, updated_at=now)
            producer.produce(settings.topics.destinations, key=dest.encode(),
                             value=config.model_dump_json().encode())
        status = DestinationStatus(destination_id="dst_a", workspace_id="ws_a", state="failing",
                                   last_delivery_at=now, last_delivery_ok=False,
                                   consecutive_failures=2, last_error="HTTP 503", updated_at=now)
        producer.produce(settings.topics.delivery_status, key=b"dst_a",
                         value=status.model_dump_json().encode())
        assert producer.flush(10) == 0

        env = {"AUDITRELAY_KAFKA_BOOTSTRAP": kafka_bootstrap,
               "AUDITRELAY_TOPIC_PREFIX": settings.topic_prefix}
        result = CliRunner().invoke(cli, ["status"], env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert len(lines) == 3
        assert "dst_a" in lines[1]
        assert "failing" in lines[1]
        assert "just now (failed)" in lines[1]
        assert "HTTP 503" in lines[1]
        assert "dst_b" in lines[2]
        assert "no deliveries" in lines[2]

        only_b = CliRunner().invoke(cli, ["status", "--workspace", "ws_b"], env=env)
        assert "dst_a" not in only_b.output
        assert "dst_b" in only_b.output
