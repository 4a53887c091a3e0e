from __future__ import annotations

import os
from pathlib import Path

import pytest

from auditrelay.ops.kafka_local import (
    BrokerStatus,
    ClusterStatus,
    LocalCluster,
    LocalKafka,
    NodeStatus,
    log4j2_properties,
    server_properties,
)
from auditrelay.schemas.errors import ProvisioningError
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


def _cluster(tmp_path: Path) -> LocalCluster:
    return LocalCluster.from_settings(
        Settings(var_dir=tmp_path / "var", cache_dir=tmp_path / "c", kafka_cluster_port=29592,
                 kafka_cluster_controller_port=29692), 3)


def test_cluster_nodes_have_their_own_ids_ports_and_homes(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path)
    assert [(n.node_id, n.port, n.controller_port) for n in cluster.nodes] == [
        (1, 29592, 29692), (2, 29593, 29693), (3, 29594, 29694)]
    assert [n.home for n in cluster.nodes] == [
        (tmp_path / "var" / "kafka-cluster" / f"node-{i}").resolve() for i in (1, 2, 3)]
    assert cluster.bootstrap == "127.0.0.1:29592,127.0.0.1:29593,127.0.0.1:29594"
    assert {n.heap_mb for n in cluster.nodes} == {Settings().kafka_cluster_heap_mb}


def test_cluster_node_properties_name_the_whole_quorum_and_replicate(tmp_path: Path) -> None:
    node = _cluster(tmp_path).node(2)
    props = dict(line.split("=", 1) for line in server_properties(node).splitlines()
                 if line and not line.startswith("#"))
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"] == (
        "1@127.0.0.1:29692,2@127.0.0.1:29693,3@127.0.0.1:29694")
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29593,CONTROLLER://127.0.0.1:29693"
    assert props["log.dirs"] == str(node.data_dir)
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "share.coordinator.state.topic.replication.factor",
                "default.replication.factor"):
        assert props[key] == "3", key
    for key in ("transaction.state.log.min.isr", "share.coordinator.state.topic.min.isr",
                "min.insync.replicas"):
        assert props[key] == "2", key
    assert props["unclean.leader.election.enable"] == "false"


def test_a_cluster_of_another_size_is_refused(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path)
    cluster_id = cluster._cluster_id()  # recorded on first use
    assert cluster._cluster_id() == cluster_id
    assert LocalCluster.from_settings(Settings(var_dir=tmp_path / "var")).ports[2] == 29094
    bigger = LocalCluster.from_settings(Settings(var_dir=tmp_path / "var"), 5)
    with pytest.raises(ProvisioningError, match="made with 3 brokers, not 5"):
        bigger._cluster_id()


def test_cluster_status_without_nodes_running(tmp_path: Path) -> None:
    status = _cluster(tmp_path).status()
    assert status.running == 0
    assert status.lines()[-1] == "cluster not running"
    assert status.lines()[0] == "node 1: 127.0.0.1:29592 down"


def test_cluster_status_lines_cap_the_listed_partitions() -> None:
    broker = BrokerStatus(True, 42, "127.0.0.1:1", Path("x"))
    status = ClusterStatus((NodeStatus(1, broker),), (1, 2, 3), 2, 5, (1, 3),
                           tuple(f"t[{n}] isr 2/3" for n in range(20)))
    lines = status.lines()
    assert lines[:4] == ["node 1: 127.0.0.1:1 up, pid 42",
                         "controller quorum: leader node 2 (epoch 5), voters 1, 2, 3",
                         "brokers registered: 1, 3", "under-replicated partitions: 20"]
    assert lines[-1] == "  ... and 8 more"


def test_cli_status_and_down_of_a_cluster_that_does_not_run(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from auditrelay.ops.cli import cli

    env = {"AUDITRELAY_VAR_DIR": str(tmp_path), "AUDITRELAY_KAFKA_PORT": "19092",
           "AUDITRELAY_KAFKA_CONTROLLER_PORT": "19093"}
    status = CliRunner().invoke(cli, ["kafka", "status", "--brokers", "3"], env=env)
    assert status.exit_code == 3, status.output
    assert status.output.splitlines() == [
        "cluster (3 brokers, bootstrap 127.0.0.1:29092,127.0.0.1:29093,127.0.0.1:29094):",
        "  node 1: 127.0.0.1:29092 down", "  node 2: 127.0.0.1:29093 down",
        "  node 3: 127.0.0.1:29094 down", "  cluster not running"]
    # Without --brokers: the single broker only, as long as no cluster was ever made.
    single = CliRunner().invoke(cli, ["kafka", "status"], env=env)
    assert (single.exit_code, single.output) == (3, "not running\n")
    down = CliRunner().invoke(cli, ["kafka", "down"], env=env)
    assert (down.exit_code, down.output) == (0, "not running\n")
