"""One private three-broker KRaft cluster for every test of this folder (marker ``cluster``).

Started once per session on free ports with its data under a temporary directory,
from the same jars as the project's single broker (``auditrelay.ops.kafka_local``),
and stopped at the end; never the shared broker. Tests may kill, stop and start its
nodes: each one leaves the cluster whole (``whole``) for the next.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient

from auditrelay.kafka.admin import admin_client
from auditrelay.ops.kafka_local import LocalCluster, LocalKafka
from auditrelay.schemas.settings import Settings
from tests.support.polling import wait_until
from tests.support.servers import free_port

BROKERS = 3
#: Each node's heap: three of them, beside the shared broker, on this 24 GiB machine.
HEAP_MB = 384
#: On two shared cores a node (re)started under load took 50 s with the default JIT;
#: the client compiler alone spends less CPU starting up.
JVM_OPTIONS = ("-XX:TieredStopAtLevel=1",)


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    shared = LocalKafka.from_settings(Settings())  # the same jar cache as the single broker
    cluster = LocalCluster(
        version=shared.version, ports=tuple(free_port() for _ in range(BROKERS)),
        controller_ports=tuple(free_port() for _ in range(BROKERS)), heap_mb=HEAP_MB,
        home=tmp_path_factory.mktemp("kafka-cluster"), cache=shared.cache, start_timeout=120,
        jvm_options=JVM_OPTIONS)
    try:
        cluster.up()
        yield cluster
    finally:
        # Its data goes with the temporary directory: no graceful stop to wait for (all
        # nodes stopping at once wait for a controller, some until killed after 30 s).
        for node in cluster.nodes:
            node.kill()


@pytest.fixture(scope="session")
def cluster_admin(kafka_cluster: LocalCluster) -> AdminClient:
    return admin_client(kafka_cluster.bootstrap)


def whole(cluster: LocalCluster, timeout: float = 90.0) -> None:
    """Until every node runs, is a registered broker, and no partition lacks a replica."""
    for node in cluster.nodes:
        node.up()

    def healthy() -> bool:
        status = cluster.status()
        return (status.running == BROKERS and len(status.registered) == BROKERS
                and not status.under_replicated)

    wait_until(healthy, timeout, lambda: "the cluster is not whole: "
               + "; ".join(cluster.status().lines()), interval=0.5)


def leader_of_most(admin: AdminClient, topic: str) -> int:
    """The node that leads the most partitions of ``topic`` (the lowest id on a tie)."""
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions.values()
    leaders = [p.leader for p in partitions]
    return min(set(leaders), key=lambda node: (-leaders.count(node), node))
