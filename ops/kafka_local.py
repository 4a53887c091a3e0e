"""A real Apache Kafka broker on this machine, without Docker.

``LocalKafka.up()`` installs Java 17 and Maven from Debian when missing, fetches
``org.apache.kafka:kafka_2.13`` and its runtime dependencies from Maven Central
into a cache inside the project (reused on later runs), writes a KRaft combined
broker+controller config on 127.0.0.1, formats storage once, starts the broker in
the background with pid and log files, and waits until an admin client sees it.

Layout, all git-ignored::

    .cache/kafka/{version}/lib/        jars (plus an slf4j->log4j2 bridge)
    var/kafka/server.properties        rewritten on every `up`
    var/kafka/log4j2.properties
    var/kafka/data/                    KRaft storage, formatted once
    var/kafka/broker.pid, broker.log   the running broker
"""

from __future__ import annotations

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
    """One single-node KRaft broker on 127.0.0.1, owned by this project checkout."""

    version: str
    port: int
    controller_port: int
    heap_mb: int
    home: Path
    cache: Path
    start_timeout: float

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

    def up(self, progress: Progress = _quiet) -> bool:
        """Start the broker unless it already runs; True when this call started it."""
        if self._running_pid() is not None:
            wait_for_broker(self.bootstrap, self.start_timeout)
            return False
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
        self._format_once(progress)
        pid = self._spawn()
        progress(f"Kafka {self.version} starting (pid {pid}); waiting for {self.bootstrap}")
        try:
            wait_for_broker(self.bootstrap, self.start_timeout, alive=lambda: _alive(pid))
        except BrokerUnavailableError as exc:
            self.down()
            raise ProvisioningError(f"{exc}\n--- last lines of {self.log_path} ---\n"
                                    f"{_tail(self.log_path)}") from exc
        return True

    def down(self) -> bool:
        """Stop exactly the broker whose pid file this checkout holds; True if one ran."""
        pid = self._running_pid()
        if pid is None:
            self.pid_path.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        if not _wait_exit(pid, _STOP_GRACE_SECONDS):
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

    def _format_once(self, progress: Progress) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = new_cluster_id()
        progress(f"formatting KRaft storage in {self.data_dir}")
        # "--cluster-id=": a base64 id may start with "-", which argparse would
        # take for an option (1 format in 64 failed that way).
        run_checked([*self._java(), _STORAGE_TOOL, "format", f"--cluster-id={cluster_id}",
                     "-c", str(self.config_path)], "format Kafka storage")

    def _java(self) -> list[str]:
        return ["java", f"-Xmx{self.heap_mb}m", f"-Xms{min(self.heap_mb, 256)}m",
                "-XX:+UseG1GC", "-Djava.awt.headless=true",
                f"-XX:ErrorFile={self.home / 'hs_err_%p.log'}",
                f"-Dlog4j2.configurationFile={self.log4j_path}",
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


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    return urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def server_properties(broker: LocalKafka) -> str:
    """KRaft combined-mode config for one node; replication 1 for every internal topic."""
    return f"""\
# Written by `auditrelay kafka up`; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{broker.controller_port}
listeners=PLAINTEXT://127.0.0.1:{broker.port},CONTROLLER://127.0.0.1:{broker.controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{broker.port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={broker.data_dir}
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
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
