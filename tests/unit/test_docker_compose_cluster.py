"""docker-compose.cluster.yml: three KRaft brokers, checked as far as a machine without
Docker allows (parsed, its structure checked; docker-compose.yml's test checks the rest).

A consistent quorum (every node lists the same three voters, each its own id at its own
controller listener), distinct node ids, host ports and data volumes, topics replicated
three times with min ISR 2, and auditrelay's services those of docker-compose.yml,
pointed at all three brokers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import yaml

from auditrelay.ops.cli import cli
from auditrelay.schemas.settings import DEFAULT_KAFKA_VERSION, Settings

ROOT = Path(__file__).resolve().parents[2]
BROKERS = ("kafka-1", "kafka-2", "kafka-3")
APP_SERVICES = ("topics", "migrate", "worker", "api")
#: Settings this variant sets and another branch of issue #15 adds to ``Settings``.
REPLICATION = {"AUDITRELAY_TOPIC_REPLICATION_FACTOR": "3",
               "AUDITRELAY_TOPIC_MIN_INSYNC_REPLICAS": "2"}


def _load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / name).read_text())
    assert isinstance(data, dict)
    return data


def _cluster() -> dict[str, Any]:
    return _load("docker-compose.cluster.yml")


def _listeners(value: str) -> dict[str, str]:
    """``NAME://host:port,...`` as {name: host:port}."""
    return dict(item.split("://") for item in value.split(","))


def test_the_services() -> None:
    assert set(_cluster()["services"]) == {*BROKERS, "postgres", *APP_SERVICES}


def test_three_kraft_nodes_with_one_quorum() -> None:
    services = _cluster()["services"]
    envs = [services[name]["environment"] for name in BROKERS]
    ids = [env["KAFKA_NODE_ID"] for env in envs]
    assert sorted(ids) == ["1", "2", "3"]
    voters = {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in envs}
    assert len(voters) == 1, "the nodes disagree on the quorum"
    expected = {f"{env['KAFKA_NODE_ID']}@{name}:"
                f"{_listeners(env['KAFKA_LISTENERS'])['CONTROLLER'].split(':')[-1]}"
                for name, env in zip(BROKERS, envs, strict=True)}
    assert set(voters.pop().split(",")) == expected
    assert len({env["CLUSTER_ID"] for env in envs}) == 1
    for name, env in zip(BROKERS, envs, strict=True):
        assert services[name]["image"] == f"apache/kafka:{DEFAULT_KAFKA_VERSION}"
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert "healthcheck" in services[name]
        advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
        assert advertised["PLAINTEXT"] == f"{name}:9092"
        assert "CONTROLLER" not in advertised
        assert set(advertised) <= set(_listeners(env["KAFKA_LISTENERS"]))


def test_replicated_three_times_with_min_isr_two() -> None:
    services = _cluster()["services"]
    for name in BROKERS:
        env = services[name]["environment"]
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert {k: env.get(k) for k in REPLICATION} == REPLICATION


def test_host_ports_and_volumes_are_distinct_and_external_listeners_match_them() -> None:
    services = _cluster()["services"]
    published = [port for service in services.values() for port in service.get("ports", [])]
    host_ports = [port.rsplit(":", 2)[-2] for port in published]
    assert len(host_ports) == len(set(host_ports)), published
    assert all(port.startswith("127.0.0.1:") for port in published)
    for name in BROKERS:
        (port,) = services[name]["ports"]
        external = _listeners(services[name]["environment"]["KAFKA_ADVERTISED_LISTENERS"])
        assert external["EXTERNAL"] == f"localhost:{port.rsplit(':', 1)[-1]}"
    data = [services[name]["volumes"][0].split(":")[0] for name in BROKERS]
    assert len(set(data)) == 3
    assert set(data) <= set(_cluster()["volumes"])


def test_every_worker_and_api_points_at_all_three_brokers() -> None:
    services = _cluster()["services"]
    for name in APP_SERVICES:
        bootstrap = services[name]["environment"]["AUDITRELAY_KAFKA_BOOTSTRAP"].split(",")
        assert sorted(bootstrap) == [f"{broker}:9092" for broker in BROKERS], name
    assert {name: c["condition"] for name, c in services["topics"]["depends_on"].items()} == (
        dict.fromkeys(BROKERS, "service_healthy"))


def test_the_app_services_are_those_of_docker_compose_yml() -> None:
    """Only the bootstrap and the replication settings differ from the single-broker file."""
    single, cluster = _load("docker-compose.yml")["services"], _cluster()["services"]
    known = {f"AUDITRELAY_{name.upper()}" for name in Settings.model_fields}
    for name in APP_SERVICES:
        env = dict(cluster[name]["environment"])
        assert set(env) - known - set(REPLICATION) == set(), name
        for key in ("AUDITRELAY_KAFKA_BOOTSTRAP", *REPLICATION):
            env.pop(key)
        theirs = dict(single[name]["environment"])
        theirs.pop("AUDITRELAY_KAFKA_BOOTSTRAP")
        assert env == theirs, name
        for key in ("build", "command", "volumes", "ports", "restart"):
            assert cluster[name].get(key) == single[name].get(key), (name, key)
    for name in ("worker", "api", "migrate"):
        assert cluster[name]["depends_on"] == single[name]["depends_on"], name
    assert cluster["postgres"] == single["postgres"]
    ctx = click.Context(cli)
    for name in APP_SERVICES:
        argv = cluster[name]["command"]
        assert cli.get_command(ctx, argv[0]) is not None, name
