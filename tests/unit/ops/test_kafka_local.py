from __future__ import annotations

import os
from pathlib import Path

import pytest

from auditrelay.ops.kafka_local import LocalKafka, log4j2_properties, server_properties
from auditrelay.schemas.settings import Settings


def _broker(tmp_path: Path) -> LocalKafka:
    return LocalKafka.from_settings(Settings(var_dir=tmp_path / "var", cache_dir=tmp_path / "c",
                                             kafka_port=19092, kafka_controller_port=19093))


def test_layout_follows_settings(tmp_path: Path) -> None:
    broker = _broker(tmp_path)
    assert broker.bootstrap == "127.0.0.1:19092"
    assert broker.home == (tmp_path / "var" / "kafka").resolve()
    assert broker.lib_dir == (tmp_path / "c" / "kafka" / broker.version / "lib").resolve()


def test_server_properties_is_single_node_kraft_on_loopback(tmp_path: Path) -> None:
    props = dict(line.split("=", 1) for line in server_properties(_broker(tmp_path)).splitlines()
                 if line and not line.startswith("#"))
    assert props["process.roles"] == "broker,controller"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr", "share.coordinator.state.topic.replication.factor",
                "share.coordinator.state.topic.min.isr"):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_log4j_config_writes_a_rolling_file(tmp_path: Path) -> None:
    text = log4j2_properties(tmp_path / "server.log")
    assert f"appender.file.fileName = {tmp_path / 'server.log'}" in text
    assert "rootLogger.appenderRef.file.ref = FILE" in text


def test_status_ignores_a_pid_that_is_not_our_broker(tmp_path: Path) -> None:
    broker = _broker(tmp_path)
    broker.home.mkdir(parents=True)
    # This very test process is alive but is no Kafka broker: never ours to stop.
    broker.pid_path.write_text(f"{os.getpid()}\n")
    assert not broker.status().running
    assert broker.down() is False
    assert not broker.pid_path.exists()


@pytest.mark.parametrize("content", ["", "garbage", "999999999"])
def test_status_with_a_bad_pid_file(tmp_path: Path, content: str) -> None:
    broker = _broker(tmp_path)
    broker.home.mkdir(parents=True)
    broker.pid_path.write_text(content)
    assert broker.status().describe() == "not running"
