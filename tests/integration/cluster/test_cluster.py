"""The three-broker cluster (issue 15): `kafka status` and `topics ensure` on it, then
the pipeline on it while brokers die and restart.

One module, so that pytest-xdist (which hands out whole files) runs every test of
the cluster in one worker, on one cluster.

One worker (a real subprocess, never restarted) and one scene (receivers on
127.0.0.1, a destination per workspace, topics with 3 replicas and
``min.insync.replicas`` 2) serve all three tests, in order; each leaves the cluster
whole for the next. After each, every event ever written to ``audit.events`` has
been delivered to its workspace's destination (the checks are cumulative), none
lost, and an event delivered twice is the same event, under the same id.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from sqlalchemy import func, select

from auditrelay.kafka.admin import describe_configs, read_compacted
from auditrelay.ops.kafka_local import LocalCluster
from auditrelay.ops.topics import ensure_topics
from auditrelay.schemas.settings import Settings
from auditrelay.schemas.topics import static_topic_specs
from auditrelay.store.db import OutboxEntry
from auditrelay.store.engine import Store, make_engine
from tests.integration.cluster.conftest import whole
from tests.support.cleanup import topics_cleaned_up
from tests.support.e2e import (
    Emitter,
    Sink,
    emit,
    expected_ids,
    pipeline_settings,
    received_events,
    set_up,
    wait_delivered,
)
from tests.support.pipeline import (
    DestinationSpec,
    IdTally,
    WorkerProcess,
    check_batches,
    create_destinations,
    event_ids_on,
)
from tests.support.polling import wait_until
from tests.support.servers import Receiver, serve
from tests.support.settings import make_settings

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


# -- the cluster itself, while whole -------------------------------------------------------


@pytest.fixture
def topic_settings(kafka_cluster: LocalCluster, cluster_admin: AdminClient, unique_name: str,
                   tmp_path: Path) -> Iterator[Settings]:
    settings = make_settings(tmp_path, kafka_cluster.bootstrap, f"test.{unique_name}.",
                             topic_partitions=2, delivery_partitions=2)
    with topics_cleaned_up(cluster_admin, settings.topics):
        yield settings


def test_status_shows_three_nodes_a_quorum_leader_and_full_replication(
        kafka_cluster: LocalCluster) -> None:
    status = kafka_cluster.status()
    assert status.running == 3
    assert status.voters == (1, 2, 3)
    assert status.leader in (1, 2, 3)
    assert status.registered == (1, 2, 3)
    assert status.under_replicated == ()
    assert f"controller quorum: leader node {status.leader}" in "\n".join(status.lines())


def test_ensure_creates_three_replicas_two_in_sync_and_reports_drift(
        topic_settings: Settings, cluster_admin: AdminClient) -> None:
    settings = topic_settings
    report = ensure_topics(settings)
    assert report.replication == "replication factor 3, min.insync.replicas 2 (3 brokers)"
    names = [spec.name for spec in static_topic_specs(settings.topics, 2, 2)]
    assert sorted(report.created) == sorted(names)
    # Each broker learns of a new topic from the metadata log at its own pace, and this
    # admin client may ask another broker than `ensure_topics` did.
    replicas: dict[str, set[int]] = {}

    def every_topic_listed() -> bool:
        meta = cluster_admin.list_topics(timeout=10).topics
        replicas.update({name: {len(p.replicas) for p in meta[name].partitions.values()}
                         for name in names if name in meta})
        return replicas.keys() >= set(names)

    wait_until(every_topic_listed, 30, lambda: f"listed: {sorted(replicas)}")
    assert {name: counts for name, counts in replicas.items() if counts != {3}} == {}
    configs = describe_configs(cluster_admin, names)
    assert {configs[name]["min.insync.replicas"] for name in names} == {"2"}
    assert ensure_topics(settings).drifted == []

    # Settings that want other replication: both differences are drift; `fix` alters
    # min.insync.replicas back and leaves the replication factor (a reassignment).
    other = settings.model_copy(update={"topic_replication_factor": 2,
                                        "topic_min_insync_replicas": 1})
    drifted = ensure_topics(other).drifted
    events = settings.topics.events
    assert {(d.setting, d.expected, d.actual) for d in drifted if d.topic == events} == {
        ("replication factor", "2", "3"), ("min.insync.replicas", "1", "2")}
    fixed = ensure_topics(other, fix=True)
    assert {d.setting for d in fixed.fixed} == {"min.insync.replicas"}
    assert describe_configs(cluster_admin, [events])[events]["min.insync.replicas"] == "1"
    assert {d.setting for d in ensure_topics(other).drifted} == {"replication factor"}


# -- the pipeline while brokers die and restart ---------------------------------------------

RecordProperty = Callable[[str, object], None]

WORKSPACES = 4
#: How long delivery may stall after a broker dies or stops (issue 15).
RESUME_SECONDS = 30.0
OUTAGE_SECONDS = 60.0


@dataclass
class Scene:
    settings: Settings
    workspace_ids: list[str]
    sinks: list[Sink]
    worker: WorkerProcess
    stack: ExitStack
    #: Per sink: requests verified so far, the event ids they held, duplicates among them.
    verified: list[int] = field(default_factory=list)
    seen: list[set[str]] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.verified = [0] * len(self.sinks)
        self.seen = [set() for _ in self.sinks]
        self.duplicates = [0] * len(self.sinks)

    def unique_received(self) -> int:
        return sum(len(sink.tally.update()) for sink in self.sinks)

    def check_worker(self) -> None:
        """The one worker process did it all: alive, and started once."""
        assert self.worker.alive(), "the worker died" + self.worker.tail()
        assert self.worker.output().count("==== worker started") == 1

    def verify_new(self) -> None:
        """Signatures and batches of the requests since the last call: a signature is
        valid for 5 minutes, so a long test verifies as it goes."""
        for n, sink in enumerate(self.sinks):
            requests = sink.receiver.snapshot()
            report = check_batches(requests[self.verified[n]:], sink.dest.secret,
                                   sink.dest.workspace_id)
            self.verified[n] = len(requests)
            self.duplicates[n] += report.duplicated + len(self.seen[n] & report.ids)
            self.seen[n] |= report.ids

    def check_all_delivered(self, timeout: float = 90.0) -> int:
        """Every event of ``audit.events`` at its destination, none foreign; how many
        duplicates (the same event, under the same id) the destinations got so far."""
        expected = expected_ids(self.settings, self.sinks)
        wait_delivered(self.sinks, expected, timeout, [self.worker])
        self.verify_new()
        for sink, want, seen in zip(self.sinks, expected, self.seen, strict=True):
            assert not (want - seen), f"{sink.dest.id}: {len(want - seen)} missing"
            assert not (seen - want), f"{sink.dest.id}: {len(seen - want)} foreign events"
        return sum(self.duplicates)


@pytest.fixture(scope="module")
def scene(kafka_cluster: LocalCluster, cluster_admin: AdminClient,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    tmp_path = tmp_path_factory.mktemp("scene")
    settings = pipeline_settings(kafka_cluster.bootstrap, f"cluster-{tmp_path.name}", tmp_path)
    report = ensure_topics(settings)
    assert report.replication == "replication factor 3, min.insync.replicas 2 (3 brokers)"
    with ExitStack() as stack:
        workspace_ids, sinks = set_up(stack, settings, WORKSPACES,
                                      [(n, (), True) for n in range(WORKSPACES)])
        worker = stack.enter_context(WorkerProcess(settings, tmp_path / "worker.log"))
        worker.wait_ready()
        # The topic Faust creates (it elects the worker that runs leader-only timers) is
        # replicated like ours, so a dead broker does not take it offline.
        leader_topic = f"{settings.topics.app_group}-__assignor-__leader"
        partitions = cluster_admin.list_topics(leader_topic, timeout=10).topics[
            leader_topic].partitions
        assert {len(p.replicas) for p in partitions.values()} == {3}
        yield Scene(settings, workspace_ids, sinks, worker, stack)


def _confirmed(bootstrap: str, topic: str, admin: AdminClient) -> tuple[int, dict[int, int]]:
    """Records on ``topic`` now (the sum of its high watermarks), and each partition's."""
    partitions = admin.list_topics(topic, timeout=10).topics[topic].partitions
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks",
                         "log_level": 0})
    try:
        marks = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                 for p in partitions}
    finally:
        consumer.close()
    return sum(marks.values()), marks


def _busiest_leader(scene: Scene, admin: AdminClient) -> int:
    """The node leading the partition of ``audit.events`` that holds the most events."""
    topic = scene.settings.topics.events
    _, marks = _confirmed(scene.settings.kafka_bootstrap, topic, admin)
    busiest = max(marks, key=lambda p: marks[p])
    leader: int = admin.list_topics(topic, timeout=10).topics[topic].partitions[busiest].leader
    return leader


def _wait_flowing(scene: Scene, more: int, what: str) -> float:
    """Until the receivers got ``more`` new events, within RESUME_SECONDS; how long."""
    start, base = time.monotonic(), received_events(scene.sinks)
    wait_until(lambda: received_events(scene.sinks) >= base + more, RESUME_SECONDS,
               lambda: f"delivery did not resume {what}" + scene.worker.tail(), interval=0.2)
    return time.monotonic() - start


@pytest.mark.timeout(300)
def test_kill_9_of_the_events_leader_mid_stream_loses_nothing(
        scene: Scene, kafka_cluster: LocalCluster, cluster_admin: AdminClient,
        record_property: RecordProperty) -> None:
    emitter = Emitter(scene.settings, scene.workspace_ids, 20_000, per_second=2_000)
    emitter.start()
    wait_until(lambda: received_events(scene.sinks) >= 3_000, 60,
               lambda: "no deliveries before the kill" + scene.worker.tail())
    victim = kafka_cluster.node(_busiest_leader(scene, cluster_admin))
    confirmed, _ = _confirmed(scene.settings.kafka_bootstrap, scene.settings.topics.events,
                              cluster_admin)
    assert victim.kill()
    killed_at = time.monotonic()
    # Resumed: every event confirmed before the kill is delivered, from the partitions
    # the dead node led too, once their leadership moved.
    wait_until(lambda: scene.unique_received() >= confirmed, RESUME_SECONDS,
               lambda: f"delivery did not catch up with the {confirmed} events confirmed "
               f"before node {victim.node_id} died" + scene.worker.tail(), interval=0.2)
    resumed = time.monotonic() - killed_at
    emitted = emitter.result(120)
    assert len(emitted) == 20_000
    assert kafka_cluster.status().running == 2, "the killed node came back on its own"
    duplicates = scene.check_all_delivered()
    scene.check_worker()
    record_property("resumed_after_s", round(resumed, 1))
    record_property("duplicates", duplicates)
    print(f"node {victim.node_id} killed; caught up in {resumed:.1f} s; "
          f"duplicates {duplicates}")
    whole(kafka_cluster)


@pytest.mark.timeout(420)
def test_a_rolling_restart_under_load_loses_nothing(
        scene: Scene, kafka_cluster: LocalCluster,
        record_property: RecordProperty) -> None:
    before = received_events(scene.sinks)
    emitter = Emitter(scene.settings, scene.workspace_ids, 500_000, per_second=500)
    emitter.start()
    try:
        wait_until(lambda: received_events(scene.sinks) >= before + 1_000, 60,
                   lambda: "no deliveries before the restarts" + scene.worker.tail())
        stalls = []
        for node in kafka_cluster.nodes:
            assert node.down()
            stalls.append(_wait_flowing(scene, 500, f"with node {node.node_id} stopped"))
            whole(kafka_cluster)  # caught up before the next one stops, as operators do
            stalls.append(_wait_flowing(scene, 500, f"after node {node.node_id} restarted"))
            scene.verify_new()
    finally:
        emitter.stop.set()
    emitted = emitter.result(120)
    assert len(emitted) > 10_000
    duplicates = scene.check_all_delivered()
    scene.check_worker()
    record_property("events", len(emitted))
    record_property("duplicates", duplicates)
    print(f"rolling restart: {len(emitted)} events; longest wait for 500 more deliveries "
          f"{max(stalls):.1f} s; duplicates {duplicates}")


def _outbox_entries(settings: Settings) -> int:
    store = Store(make_engine(settings.database_url))
    try:
        with store.transaction() as session:
            return int(session.scalar(select(func.count()).select_from(OutboxEntry)) or 0)
    finally:
        store.dispose()


@pytest.mark.timeout(420)
def test_destinations_created_while_a_broker_is_down_for_60_s(
        scene: Scene, kafka_cluster: LocalCluster, cluster_admin: AdminClient) -> None:
    settings = scene.settings
    names = settings.topics
    # The node leading audit.destinations, where the outbox writes the configs.
    leader = cluster_admin.list_topics(names.destinations, timeout=10).topics[
        names.destinations].partitions[0].leader
    victim = kafka_cluster.node(leader)
    emitter = Emitter(settings, scene.workspace_ids, 500_000, per_second=100)
    emitter.start()
    created: list[tuple[str, Sink]] = []
    try:
        assert victim.down()
        down_at = time.monotonic()
        for n in range(3):
            # Spread over the outage: one destination now, one at 20 s, one at 40 s.
            at = down_at + 20 * n
            wait_until(lambda: time.monotonic() >= at, 25, interval=0.2)  # noqa: B023
            receiver = Receiver()
            url = scene.stack.enter_context(serve(receiver))
            [workspace], [dest] = create_destinations(
                settings, 1, [DestinationSpec(0, f"{url}/hook/new{n}")])
            # The worker's outbox publisher writes the config and the self-audit events.
            wait_until(lambda: _outbox_entries(settings) == 0, 15,
                       lambda: f"the outbox kept {_outbox_entries(settings)} entries"
                       + scene.worker.tail())
            assert dest.id in read_compacted(settings.kafka_bootstrap, names.destinations)
            created.append((workspace, Sink(dest, receiver, IdTally(receiver))))
        # Each new destination routed to (the router follows audit.destinations).
        new_workspaces = [ws for ws, _ in created]

        def all_reached() -> bool:
            emit(settings, new_workspaces, len(new_workspaces))
            return all(sink.tally.update() for _, sink in created)

        wait_until(all_reached, 20, "a new destination got nothing", interval=0.5)
        wanted = emit(settings, new_workspaces, 600)
        assert time.monotonic() - down_at < OUTAGE_SECONDS, "the outage ended too early"
        assert kafka_cluster.status().running == 2
        scene.verify_new()
        wait_until(lambda: time.monotonic() - down_at >= OUTAGE_SECONDS, OUTAGE_SECONDS,
                   interval=0.5)
    finally:
        emitter.stop.set()
    whole(kafka_cluster)
    assert len(emitter.result(120)) > 0
    scene.check_all_delivered()
    scene.check_worker()
    truth = event_ids_on(settings.kafka_bootstrap, names.events)
    for n, (workspace, sink) in enumerate(created):
        want = set(wanted[n::len(created)])  # emit goes round robin over the workspaces
        tally = sink.tally
        wait_until(lambda: want <= tally.update(), 60,  # noqa: B023
                   lambda: f"{len(want - tally.ids)} events missing")  # noqa: B023
        report = check_batches(sink.receiver.snapshot(), sink.dest.secret, workspace)
        of_workspace = {ce_id for ce_id, _, ws in truth if ws == workspace}
        assert report.ids <= of_workspace, "foreign events at a new destination"
        assert want <= report.ids
