"""A real Apache Kafka broker on this machine, without Docker.

``LocalKafka.up()`` installs Java 17 and Maven from Debian when missing, fetches
``org.apache.kafka:kafka_2.13`` and its runtime dependencies from Maven Central
into a cache inside the project (reused on later runs), writes a KRaft combined
broker+controller config on 127.0.0.1, formats storage once, starts the broker in
the background with pid and log files, and waits until an admin client sees it.

``LocalCluster`` is N such nodes (``auditrelay kafka up --brokers 3``), each a
``LocalKafka`` with its own node id, ports and home, all of them voters of one
controller quorum, formatted with one cluster id; its internal topics and the
broker-side topic defaults are replicated three times (``min.insync.replicas`` 2).

Layout, all git-ignored::

    .cache/kafka/{version}/lib/        jars (plus an slf4j->log4j2 bridge)
    var/kafka/server.properties        rewritten on every `up`
    var/kafka/log4j2.properties
    var/kafka/data/                    KRaft storage, formatted once
    var/kafka/broker.pid, broker.log   the running broker
    var/kafka-cluster/cluster.id       the cluster's id and size, written on its first `up`
    var/kafka-cluster/node-{n}/        one node each, laid out as var/kafka/
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from base64 import urlsafe_b64encode
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from auditrelay.ops.system import apt_install, run_checked
from auditrelay.schemas.errors import BrokerUnavailableError, ProvisioningError
from auditrelay.schemas.settings import Settings

Progress = Callable[[str], None]

_MAIN_CLASS = "kafka.Kafka"
_STORAGE_TOOL = "kafka.tools.StorageTool"
_STOP_GRACE_SECONDS = 30.0
#: Under-replicated partitions `kafka status` names; the rest it counts.
_LISTED = 12


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    log_path: Path

    def describe(self) -> str:
        if self.running:
            return f"running: pid {self.pid}, bootstrap {self.bootstrap}, log {self.log_path}"
        return "not running"


@dataclass(frozen=True)
class LocalKafka:
    """One KRaft node (broker and controller) on 127.0.0.1, owned by this project checkout:
    a single-node broker by default, or one node of a ``LocalCluster``."""

    version: str
    port: int
    controller_port: int
    heap_mb: int
    home: Path
    cache: Path
    start_timeout: float
    node_id: int = 1
    #: ``(node id, controller port)`` of every voter of the controller quorum; empty: this
    #: node alone.
    voters: tuple[tuple[int, int], ...] = ()
    #: More JVM options, after the project's (tests start nodes faster with C1 alone).
    jvm_options: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalKafka:
        return cls(
            version=settings.kafka_version,
            port=settings.kafka_port,
            controller_port=settings.kafka_controller_port,
            heap_mb=settings.kafka_heap_mb,
            home=(settings.var_dir / "kafka").resolve(),
            cache=(settings.cache_dir / "kafka" / settings.kafka_version).resolve(),
            start_timeout=settings.kafka_start_timeout_seconds,
        )

    # -- paths ------------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def quorum(self) -> tuple[tuple[int, int], ...]:
        return self.voters or ((self.node_id, self.controller_port),)

    @property
    def lib_dir(self) -> Path:
        return self.cache / "lib"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def config_path(self) -> Path:
        return self.home / "server.properties"

    @property
    def log4j_path(self) -> Path:
        return self.home / "log4j2.properties"

    @property
    def pid_path(self) -> Path:
        return self.home / "broker.pid"

    @property
    def log_path(self) -> Path:
        return self.home / "broker.log"

    # -- lifecycle --------------------------------------------------------------------------

    def up(self, progress: Progress = _quiet, cluster_id: str | None = None) -> bool:
        """Start the broker unless it already runs; True when this call started it.

        ``cluster_id`` formats empty storage with that id (every node of a cluster
        has the same); a new random one otherwise.
        """
        pid = self.start(progress, cluster_id)
        if pid is None:
            wait_for_broker(self.bootstrap, self.start_timeout)
            return False
        self.await_started(pid, progress)
        return True

    def start(self, progress: Progress = _quiet, cluster_id: str | None = None) -> int | None:
        """Write the config, format storage once, spawn the JVM; its pid, or None when
        this node already runs. Does not wait: the nodes of a cluster answer only once
        a majority of the quorum runs, so ``LocalCluster`` starts them all first."""
        if self._running_pid() is not None:
            return None
        if broker_answers(self.bootstrap):
            raise ProvisioningError(
                f"another Kafka broker already listens on {self.bootstrap}; it is not the one "
                f"this checkout started (no live pid in {self.pid_path}). Stop it, or set "
                "AUDITRELAY_KAFKA_PORT and AUDITRELAY_KAFKA_CONTROLLER_PORT to free ports."
            )
        ensure_toolchain(progress)
        fetch_jars(self.cache, self.version, progress)
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(server_properties(self))
        self.log4j_path.write_text(log4j2_properties(self.home / "server.log"))
        self._format_once(progress, cluster_id)
        pid = self._spawn()
        progress(f"Kafka {self.version} node {self.node_id} starting (pid {pid}); "
                 f"waiting for {self.bootstrap}")
        return pid

    def await_started(self, pid: int, progress: Progress = _quiet) -> None:
        """Until the node at ``pid`` answers; stops it and raises if it never does."""
        try:
            wait_for_broker(self.bootstrap, self.start_timeout, alive=lambda: _alive(pid))
        except BrokerUnavailableError as exc:
            self.down()
            raise ProvisioningError(f"{exc}\n--- last lines of {self.log_path} ---\n"
                                    f"{_tail(self.log_path)}") from exc
        progress(f"node {self.node_id} answers at {self.bootstrap}")

    def down(self) -> bool:
        """Stop exactly the broker whose pid file this checkout holds; True if one ran."""
        pid = self.terminate()
        if pid is not None:
            self.reap(pid)
        return pid is not None

    def terminate(self) -> int | None:
        """SIGTERM to our broker, without waiting; its pid, or None if none ran."""
        pid = self._running_pid()
        if pid is None:
            self.pid_path.unlink(missing_ok=True)
            return None
        os.kill(pid, signal.SIGTERM)
        return pid

    def reap(self, pid: int) -> None:
        """Until ``pid`` (from ``terminate``) exited; SIGKILL after the grace period."""
        if not _wait_exit(pid, _STOP_GRACE_SECONDS):
            os.kill(pid, signal.SIGKILL)
            _wait_exit(pid, 10.0)
        self.pid_path.unlink(missing_ok=True)

    def kill(self) -> bool:
        """SIGKILL, as ``kill -9`` (a crash: nothing is flushed); True if the node ran."""
        pid = self._running_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGKILL)
        _wait_exit(pid, 10.0)
        self.pid_path.unlink(missing_ok=True)
        return True

    def status(self) -> BrokerStatus:
        pid = self._running_pid()
        return BrokerStatus(pid is not None, pid, self.bootstrap, self.log_path)

    # -- internals --------------------------------------------------------------------------

    def _running_pid(self) -> int | None:
        """The pid in the pid file, if that process is alive and is our broker."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        # A pid can be reused by an unrelated process after a reboot or crash:
        # only a JVM running kafka.Kafka with our config file counts as ours.
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        wanted = {_MAIN_CLASS.encode(), str(self.config_path).encode()}
        return pid if wanted <= set(cmdline) and _alive(pid) else None

    def quorum_state(self) -> dict[str, object]:
        """What this node last wrote of the controller quorum (``leaderId``,
        ``leaderEpoch``, ...); empty when it never ran."""
        try:
            state = json.loads((self.data_dir / "__cluster_metadata-0" / "quorum-state")
                               .read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def _format_once(self, progress: Progress, cluster_id: str | None = None) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = cluster_id or new_cluster_id()
        progress(f"formatting KRaft storage in {self.data_dir}")
        # "--cluster-id=": a base64 id may start with "-", which argparse would
        # take for an option (1 format in 64 failed that way).
        run_checked([*self._java(), _STORAGE_TOOL, "format", f"--cluster-id={cluster_id}",
                     "-c", str(self.config_path)], "format Kafka storage")

    def _java(self) -> list[str]:
        return ["java", f"-Xmx{self.heap_mb}m", f"-Xms{min(self.heap_mb, 256)}m",
                "-XX:+UseG1GC", "-Djava.awt.headless=true",
                f"-XX:ErrorFile={self.home / 'hs_err_%p.log'}",
                f"-Dlog4j2.configurationFile={self.log4j_path}", *self.jvm_options,
                "-cp", f"{self.lib_dir}/*"]

    def _spawn(self) -> int:
        # posix_spawn rather than Popen: the broker outlives this process, and a
        # Popen object would warn when collected with its child still running.
        argv = [*self._java(), _MAIN_CLASS, str(self.config_path)]
        pid = os.posix_spawnp(argv[0], argv, dict(os.environ), setsid=True, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(self.log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND,
             0o644),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ])
        self.pid_path.write_text(f"{pid}\n")
        return pid


@dataclass(frozen=True)
class NodeStatus:
    node_id: int
    broker: BrokerStatus

    def describe(self) -> str:
        state = f"up, pid {self.broker.pid}" if self.broker.running else "down"
        return f"node {self.node_id}: {self.broker.bootstrap} {state}"


@dataclass(frozen=True)
class ClusterStatus:
    """Each node, the controller quorum as the nodes last wrote it, and the partitions
    whose in-sync replicas are fewer than their replicas (``topic[partition] isr/replicas``)."""

    nodes: tuple[NodeStatus, ...]
    voters: tuple[int, ...]
    leader: int | None
    epoch: int | None
    registered: tuple[int, ...] = ()
    under_replicated: tuple[str, ...] = ()

    @property
    def running(self) -> int:
        return sum(node.broker.running for node in self.nodes)

    def lines(self) -> list[str]:
        out = [node.describe() for node in self.nodes]
        if not self.running:
            return [*out, "cluster not running"]
        leader = "none" if self.leader is None else f"node {self.leader} (epoch {self.epoch})"
        out.append(f"controller quorum: leader {leader}, voters "
                   f"{', '.join(str(v) for v in self.voters)}")
        out.append(f"brokers registered: {', '.join(str(b) for b in self.registered) or 'none'}")
        out.append(f"under-replicated partitions: {len(self.under_replicated)}")
        out += [f"  {p}" for p in self.under_replicated[:_LISTED]]
        if len(self.under_replicated) > _LISTED:
            out.append(f"  ... and {len(self.under_replicated) - _LISTED} more")
        return out


@dataclass(frozen=True)
class LocalCluster:
    """N ``LocalKafka`` nodes on 127.0.0.1, every one a broker and a controller voter.

    The cluster's id and size are kept in ``home/cluster.id`` from its first ``up``:
    storage formatted for three voters cannot join a quorum of another size.
    """

    version: str
    ports: tuple[int, ...]
    controller_ports: tuple[int, ...]
    heap_mb: int
    home: Path
    cache: Path
    start_timeout: float
    jvm_options: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings, brokers: int | None = None) -> LocalCluster:
        """``brokers`` nodes on consecutive ports from ``kafka_cluster_port`` and
        ``kafka_cluster_controller_port``; without ``brokers``, as many as the cluster
        was made with (3 if it never was)."""
        home = (settings.var_dir / "kafka-cluster").resolve()
        size = brokers or _recorded_size(home) or 3
        return cls(
            version=settings.kafka_version,
            ports=tuple(settings.kafka_cluster_port + n for n in range(size)),
            controller_ports=tuple(settings.kafka_cluster_controller_port + n
                                   for n in range(size)),
            heap_mb=settings.kafka_cluster_heap_mb,
            home=home,
            cache=(settings.cache_dir / "kafka" / settings.kafka_version).resolve(),
            start_timeout=settings.kafka_start_timeout_seconds,
        )

    @property
    def nodes(self) -> tuple[LocalKafka, ...]:
        voters = tuple(zip(range(1, len(self.ports) + 1), self.controller_ports, strict=True))
        return tuple(
            LocalKafka(version=self.version, port=port, controller_port=controller,
                       heap_mb=self.heap_mb, home=self.home / f"node-{node_id}",
                       cache=self.cache, start_timeout=self.start_timeout, node_id=node_id,
                       voters=voters, jvm_options=self.jvm_options)
            for (node_id, controller), port in zip(voters, self.ports, strict=True))

    def node(self, node_id: int) -> LocalKafka:
        return self.nodes[node_id - 1]

    @property
    def bootstrap(self) -> str:
        """Every node's address: clients find the cluster while any one of them answers."""
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def meta_path(self) -> Path:
        return self.home / "cluster.id"

    def up(self, progress: Progress = _quiet) -> bool:
        """Start every node that does not run, then wait until all of them are
        registered brokers; True when this call started any."""
        cluster_id = self._cluster_id()
        started = [(node, node.start(progress, cluster_id)) for node in self.nodes]
        try:
            for node, pid in started:
                if pid is not None:
                    node.await_started(pid, progress)
            self._wait_registered()
        except (ProvisioningError, BrokerUnavailableError):
            self.down()
            raise
        return any(pid is not None for _, pid in started)

    def down(self) -> bool:
        """Stop every node this checkout started (graceful, then forced); True if any ran.

        All are signalled at once: nodes stopped one after the other would leave the
        last ones without a controller quorum, waiting for one until they are killed.
        """
        pids = [(node, node.terminate()) for node in self.nodes]
        for node, pid in pids:
            if pid is not None:
                node.reap(pid)
        return any(pid is not None for _, pid in pids)

    def status(self, timeout: float = 5.0) -> ClusterStatus:
        nodes = tuple(NodeStatus(node.node_id, node.status()) for node in self.nodes)
        states = [(node.quorum_state(), status) for node, status in
                  zip(self.nodes, nodes, strict=True)]
        live = [state for state, status in states if status.broker.running and state]
        newest = max(live or [s for s, _ in states if s] or [{}],
                     key=lambda s: _int(s.get("leaderEpoch")) or -1)
        leader = _int(newest.get("leaderId"))
        status = ClusterStatus(nodes, tuple(range(1, len(self.ports) + 1)),
                               leader if leader is not None and leader >= 0 else None,
                               _int(newest.get("leaderEpoch")))
        if not status.running:
            return status
        registered, under = _replication_health(
            ",".join(n.broker.bootstrap for n in nodes if n.broker.running), timeout)
        return ClusterStatus(status.nodes, status.voters, status.leader, status.epoch,
                             registered, under)

    def _cluster_id(self) -> str:
        """The recorded id; a new one recorded for a new cluster; an error for another size."""
        try:
            meta = json.loads(self.meta_path.read_text())
        except FileNotFoundError:
            self.home.mkdir(parents=True, exist_ok=True)
            cluster_id = new_cluster_id()
            self.meta_path.write_text(json.dumps({"cluster_id": cluster_id,
                                                  "brokers": len(self.ports)}) + "\n")
            return cluster_id
        except ValueError as exc:
            raise ProvisioningError(f"{self.meta_path} is not valid JSON: {exc}") from exc
        if meta.get("brokers") != len(self.ports):
            raise ProvisioningError(
                f"the local cluster in {self.home} was made with {meta.get('brokers')} brokers, "
                f"not {len(self.ports)}: use --brokers {meta.get('brokers')}, or stop it and "
                f"remove {self.home} to make a new one")
        return str(meta["cluster_id"])

    def _wait_registered(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        want = len(self.ports)
        while True:
            registered, _ = _replication_health(self.bootstrap, 2.0, partitions=False)
            if len(registered) >= want:
                return
            if time.monotonic() > deadline:
                raise BrokerUnavailableError(
                    f"only brokers {registered} of {want} registered within "
                    f"{self.start_timeout:.0f} s")
            time.sleep(0.2)


def _recorded_size(home: Path) -> int | None:
    try:
        size = json.loads((home / "cluster.id").read_text()).get("brokers")
    except (OSError, ValueError, AttributeError):
        return None
    return size if isinstance(size, int) and size > 0 else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _replication_health(bootstrap: str, timeout: float, *, partitions: bool = True,
                        ) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """The registered broker ids, and each partition whose ISR is smaller than its
    replica set, from the cluster's metadata; nothing when no broker answers."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 1000,
                         "log_level": 0})
    try:
        meta = admin.list_topics(timeout=timeout)
    except KafkaException:
        return (), ()
    under = [] if not partitions else [
        f"{name}[{pid}] isr {len(part.isrs)}/{len(part.replicas)}"
        for name, topic in sorted(meta.topics.items())
        for pid, part in sorted(topic.partitions.items())
        if len(part.isrs) < len(part.replicas)]
    return tuple(sorted(meta.brokers)), tuple(under)


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    return urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def server_properties(broker: LocalKafka) -> str:
    """KRaft combined-mode config for one node.

    Alone, every internal topic has one replica. In a quorum of three or more, every
    internal topic (group offsets, transactions, share groups) and every topic created
    without a replication factor has three replicas and ``min.insync.replicas`` 2, so
    that one node can die without losing an acknowledged write or stopping writes.
    """
    voters = ",".join(f"{node}@127.0.0.1:{port}" for node, port in broker.quorum)
    replicas, min_isr = (3, 2) if len(broker.quorum) >= 3 else (1, 1)
    return f"""\
# Written by `auditrelay kafka up`; edits are overwritten.
process.roles=broker,controller
node.id={broker.node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{broker.port},CONTROLLER://127.0.0.1:{broker.controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{broker.port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={broker.data_dir}
num.partitions=1
default.replication.factor={replicas}
min.insync.replicas={min_isr}
unclean.leader.election.enable=false
auto.create.topics.enable=false
offsets.topic.replication.factor={replicas}
offsets.topic.num.partitions=12
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={min_isr}
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor={replicas}
share.coordinator.state.topic.min.isr={min_isr}
group.initial.rebalance.delay.ms=0
log.cleaner.backoff.ms=1000
"""


def log4j2_properties(log_file: Path) -> str:
    return f"""\
status = warn
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = {log_file}
appender.file.filePattern = {log_file}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


# -- toolchain --------------------------------------------------------------------------------


def java_major_version() -> int | None:
    if shutil.which("java") is None:
        return None
    out = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False)
    for token in (out.stderr + out.stdout).replace('"', " ").split():
        head = token.split(".")[0]
        if head.isdigit() and "." in token:
            return int(head)
    return None


def ensure_toolchain(progress: Progress = _quiet) -> None:
    """Install Java 17 and Maven from Debian when they are missing."""
    packages = []
    major = java_major_version()
    if major is None or major < 17:
        packages.append("openjdk-17-jre-headless")
    if shutil.which("mvn") is None:
        packages.append("maven")
    if not packages:
        return
    progress(f"installing {', '.join(packages)} from Debian")
    apt_install(packages)


def _pom(version: str) -> str:
    return f"""\
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>auditrelay.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""


def fetch_jars(cache: Path, version: str, progress: Progress = _quiet) -> Path:
    """Kafka's runtime classpath in ``cache/lib``, downloaded once per version."""
    lib = cache / "lib"
    marker = cache / "complete"
    if marker.exists() and lib.is_dir():
        return lib
    progress(f"fetching Apache Kafka {version} jars with Maven into {cache}")
    cache.mkdir(parents=True, exist_ok=True)
    staging = cache / "lib.partial"
    shutil.rmtree(staging, ignore_errors=True)
    (cache / "pom.xml").write_text(_pom(version))
    mvn = ["mvn", "-B", "-q", "-f", str(cache / "pom.xml")]
    run_checked([*mvn, "dependency:copy-dependencies", "-DincludeScope=runtime",
          f"-DoutputDirectory={staging}"], f"fetch kafka_2.13:{version}")
    # The kafka_2.13 POM brings slf4j-api and log4j-core but no binding between
    # them, so the broker would log nothing: add the bridge of log4j-core's version.
    log4j = _log4j_version(staging)
    run_checked([*mvn, "dependency:copy",
          f"-Dartifact=org.apache.logging.log4j:log4j-slf4j-impl:{log4j}",
          f"-DoutputDirectory={staging}"], "fetch log4j-slf4j-impl")
    shutil.rmtree(lib, ignore_errors=True)
    staging.rename(lib)
    marker.write_text(f"{version}\n")
    return lib


def _log4j_version(lib: Path) -> str:
    for jar in lib.glob("log4j-core-*.jar"):
        return jar.stem.removeprefix("log4j-core-")
    raise ProvisioningError(f"kafka_2.13 brought no log4j-core into {lib}")


# -- broker probing ---------------------------------------------------------------------------


def broker_answers(bootstrap: str, timeout: float = 2.0) -> bool:
    """True when an admin client sees at least one broker at ``bootstrap``."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 1000,
                         "log_level": 0})
    try:
        return bool(admin.list_topics(timeout=timeout).brokers)
    except KafkaException:
        return False


def wait_for_broker(bootstrap: str, timeout: float,
                    alive: Callable[[], bool] = lambda: True) -> None:
    """Poll until a broker answers, the deadline passes, or the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if broker_answers(bootstrap, timeout=2.0):
            return
        if not alive():
            raise BrokerUnavailableError(f"the broker process exited before {bootstrap} answered")
        time.sleep(0.2)
    raise BrokerUnavailableError(f"no Kafka broker answered at {bootstrap} within {timeout:.0f} s")


# -- process helpers --------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        waited = 0  # not our child: fall back to a signal probe
    if waited == pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still accepts signal 0; its /proc state says Z.
    try:
        return " Z " not in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:4]
    except OSError:
        return False


def _wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
