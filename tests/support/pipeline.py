"""Helpers of the pipeline's end-to-end tests: worker processes, setup, what receivers got.

- ``WorkerProcess``: ``python -m auditrelay.ops worker`` as a subprocess with the
  ``AUDITRELAY_*`` environment of a ``Settings`` object, its output in a file
  (``tail()`` for failure messages); always stopped (killed if it must be) on exit.
- ``create_destinations`` / ``publish_outbox``: workspaces and destinations through
  the API's service layer, and their Kafka side effects published at once.
- ``event_ids_on``: read a topic's CloudEvents ids.
- ``IdTally`` / ``check_batches``: what a ``tests.support.servers.Receiver`` got.

Waiting is ``tests.support.polling``'s; deleting a test's topics ``tests.support.cleanup``'s.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from confluent_kafka import Consumer, Message, TopicPartition

from auditrelay.kafka.admin import admin_client
from auditrelay.kafka.topic_reader import read_topic, start_reading
from auditrelay.schemas.settings import Settings
from auditrelay.store.engine import Store, make_engine, upgrade_database
from auditrelay.store.outbox import OutboxPublisher
from auditrelay.wire.ssrf import IPAddress
from tests.support.polling import wait_until
from tests.support.servers import Received, Receiver

__all__ = [
    "BatchReport",
    "DestinationSpec",
    "IdTally",
    "WorkerProcess",
    "check_batches",
    "create_destinations",
    "event_ids_on",
    "publish_outbox",
    "read_records",
    "worker_env",
]

# -- the worker as a subprocess ------------------------------------------------------------

#: Settings passed to a worker subprocess (everything a test may change).
_WORKER_SETTINGS = (
    "kafka_bootstrap", "topic_prefix", "topic_partitions", "var_dir", "database_url",
    "delivery_partitions", "allow_private_cidrs", "batch_window_seconds",
    "retry_schedule_seconds", "retry_jitter", "consumer_session_timeout_seconds", "log_level",
    "worker_stages",
)


def _env_value(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(_env_value(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def worker_env(settings: Settings) -> dict[str, str]:
    """This process's environment without any ``AUDITRELAY_*``, plus ``settings``'s."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITRELAY_")}
    for name in _WORKER_SETTINGS:
        env[f"AUDITRELAY_{name.upper()}"] = _env_value(getattr(settings, name))
    if settings.secret_key is not None:
        env["AUDITRELAY_SECRET_KEY"] = settings.secret_key.get_secret_value()
    # Several workers run at once here: no metrics endpoint (no port to share), and
    # text logs (``wait_ready`` reads them).
    for name, value in (("metrics_port", "0"), ("log_format", "text")):
        if name in Settings.model_fields:
            env[f"AUDITRELAY_{name.upper()}"] = value
    return env


class WorkerProcess:
    """``python -m auditrelay.ops worker`` with ``settings``; its output goes to ``log_path``.

    Use as a context manager: on exit the worker is stopped (SIGTERM, then SIGKILL
    after ``grace`` seconds) whatever happened.
    """

    READY = "Worker ready"

    def __init__(self, settings: Settings, log_path: Path, *, grace: float = 20.0,
                 extra_env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.log_path = log_path
        self.grace = grace
        #: Set over ``worker_env``'s (a test that reads the worker's metrics gives a port).
        self.extra_env = dict(extra_env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __enter__(self) -> WorkerProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self._log.write(f"==== worker started at {time.strftime('%X')} ====\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen([sys.executable, "-m", "auditrelay.ops", "worker"],
                                     env={**worker_env(self.settings), **self.extra_env},
                                     stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 60) -> str:
        return f"\n--- last lines of {self.log_path} ---\n" + "\n".join(
            self.output().splitlines()[-lines:])

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the Faust worker says it is ready; fails early if the process exits."""
        def ready() -> bool:
            if not self.alive():
                raise AssertionError(f"the worker exited with {self.proc and self.proc.poll()}"
                                     + self.tail())
            return self.READY in self.output().rsplit("==== worker started", 1)[-1]

        wait_until(ready, timeout, lambda: "the worker did not get ready" + self.tail(),
                   interval=0.1)

    def kill(self) -> None:
        """SIGKILL, as ``kill -9``: no shutdown code runs, nothing is committed on the way."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close_log()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


# -- workspaces and destinations through the service layer ---------------------------------


@dataclass(frozen=True)
class DestinationSpec:
    """A destination to create: its workspace (by index), URL and filters."""

    workspace: int
    url: str
    event_types: tuple[str, ...] = ()
    enabled: bool = True
    name: str = "siem"
    #: The destination kind (``auditrelay.wire.kinds``), its options and credentials.
    kind: str = "webhook"
    options: Mapping[str, Any] = field(default_factory=dict)
    credentials: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CreatedDestination:
    id: str
    workspace_id: str
    secret: str
    spec: DestinationSpec


PUBLIC = ipaddress.ip_address("93.184.216.34")


def public_resolver(host: str, port: int) -> list[IPAddress]:
    """What the service's creation-time check sees for a made-up name: a public address."""
    return [PUBLIC]


def create_destinations(settings: Settings, workspaces: int,
                        specs: Sequence[DestinationSpec], *,
                        resolver: Callable[[str, int], Sequence[IPAddress]] = public_resolver,
                        ) -> tuple[list[str], list[CreatedDestination]]:
    """Enterprise workspaces and destinations, written by ``auditrelay.api.service.Service`` (rows
    and outbox entries) into the settings' database, upgraded first (as ``auditrelay db
    upgrade`` before a deployment); returns the workspace ids and the destinations."""
    from auditrelay.api.models import DestinationIn
    from auditrelay.api.service import ADMIN_ACTOR, Service
    from auditrelay.wire.secrets import box_from_settings

    box = box_from_settings(settings)
    upgrade_database(settings.database_url, box=box)
    store = Store(make_engine(settings.database_url))
    service = Service(settings, box, resolver=resolver)
    try:
        with store.transaction() as session:
            rows = [service.create_workspace(session, f"ws{n}", "enterprise")[0]
                    for n in range(workspaces)]
            created = []
            for spec in specs:
                body = DestinationIn(name=spec.name, url=spec.url, enabled=spec.enabled,
                                     event_types=list(spec.event_types), kind=spec.kind,
                                     options=dict(spec.options),
                                     credentials=dict(spec.credentials))
                dest, secret = service.create_destination(session, rows[spec.workspace], body,
                                                          ADMIN_ACTOR)
                created.append(CreatedDestination(dest.id, dest.workspace_id, secret, spec))
        return [w.id for w in rows], created
    finally:
        store.dispose()


def publish_outbox(settings: Settings) -> int:
    """Perform every pending outbox entry now (topics, config records, self-audit events),
    as a worker's or the API's publisher would; returns how many there were."""
    store = Store(make_engine(settings.database_url))
    publisher = OutboxPublisher(store, {"bootstrap.servers": settings.kafka_bootstrap,
                                        "enable.idempotence": True},
                                admin_client(settings.kafka_bootstrap))
    try:
        assert publisher.acquire(), "another outbox publisher holds the lease"
        total = 0
        while True:
            done = publisher.publish_pending()
            total += done
            if done == 0:
                return total
    finally:
        publisher.stop()
        store.dispose()


# -- reading topics ------------------------------------------------------------------------


def _header(headers: Any, name: str) -> str | None:
    for key, value in headers or []:
        if key == name and value is not None:
            return bytes(value).decode()
    return None


def event_ids_on(bootstrap: str, topic: str, *, timeout: float = 60.0,
                 ) -> list[tuple[str, str, str]]:
    """``(ce_id, ce_type, ce_workspaceid)`` of every record of ``topic``, up to its end now."""
    return [(_header(msg.headers(), "ce_id") or "", _header(msg.headers(), "ce_type") or "",
             _header(msg.headers(), "ce_workspaceid") or "")
            for msg in read_topic(bootstrap, topic, timeout=timeout)]


# -- what receivers got --------------------------------------------------------------------


class IdTally:
    """The CloudEvents ids a receiver got so far, parsed incrementally (for waiting)."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self.ids: set[str] = set()
        self.events = 0
        self._seen = 0

    def update(self) -> set[str]:
        requests = self.receiver.snapshot()
        for request in requests[self._seen:]:
            batch = json.loads(request.body)
            self.events += len(batch)
            self.ids.update(str(event["id"]) for event in batch)
        self._seen = len(requests)
        return self.ids


@dataclass
class BatchReport:
    """What ``check_batches`` found: every copy of every event, by id, and the batch ids."""

    copies: dict[str, list[bytes]] = field(default_factory=dict)
    batch_ids: list[str] = field(default_factory=list)
    requests: int = 0

    @property
    def ids(self) -> set[str]:
        return set(self.copies)

    @property
    def duplicated(self) -> int:
        return sum(len(c) - 1 for c in self.copies.values())


def check_batches(requests: Sequence[Received], secret: str, workspace_id: str) -> BatchReport:
    """Every request is a contract section 2 delivery, or an AssertionError says which not.

    Signed (the official ``standardwebhooks`` verifies it), one batch of 1 to 100
    valid CloudEvents (the ``cloudevents`` SDK parses each) of ``workspace_id``;
    a batch id sent twice carries the same body both times, and an event id seen
    twice the same event.
    """
    from cloudevents.core.formats.json import JSONFormat
    from standardwebhooks.webhooks import Webhook

    webhook = Webhook(secret)
    json_format = JSONFormat()
    report = BatchReport()
    bodies: dict[str, bytes] = {}
    for n, request in enumerate(requests):
        where = f"request {n} ({request.headers.get('webhook-id')})"
        webhook.verify(request.body, request.headers, json_parse=False)  # raises if forged
        assert request.headers["content-type"] == "application/cloudevents-batch+json", where
        assert request.headers["x-webhook-id"] == request.headers["webhook-id"], where
        batch_id = request.headers["webhook-id"]
        assert bodies.setdefault(batch_id, request.body) == request.body, (
            f"{where}: batch id sent again with another body")
        report.batch_ids.append(batch_id)
        batch = json.loads(request.body)
        assert isinstance(batch, list), where
        assert 1 <= len(batch) <= 100, f"{where}: {len(batch)} events"
        for element in batch:
            raw = json.dumps(element, separators=(",", ":")).encode()
            event = json_format.read(None, raw)
            assert event.get_specversion() == "1.0", where
            assert event.get_extension("workspaceid") == workspace_id, where
            copies = report.copies.setdefault(event.get_id(), [])
            assert not copies or copies[0] == raw, f"{where}: {event.get_id()} changed"
            copies.append(raw)
    report.requests = len(requests)
    return report


def committed_lag(bootstrap: str, group: str, topic: str) -> int:
    """Records of ``topic`` past ``group``'s committed offsets (all of them if none)."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    admin = admin_client(bootstrap)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"lag-{group}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p)
                                                       for p in partitions])
        result = admin.list_consumer_group_offsets([request])[group].result(timeout=10)
        committed = {tp.partition: max(tp.offset, 0) for tp in result.topic_partitions}
        lag = 0
        for p in partitions:
            end = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            lag += end - committed.get(p, 0)
        return lag
    finally:
        consumer.close()


def read_records(bootstrap: str, topic: str, until: Callable[[list[Message]], bool],
                 timeout: float, *, settle: float = 0.0) -> list[Message]:
    """Every record of ``topic`` once ``until`` holds for them; fails after ``timeout``.

    With ``settle``, reading goes on that many seconds after ``until`` held, so that a
    surplus (duplicates) is seen too.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    try:
        start_reading(consumer, topic, timeout=10)
        seen: list[Message] = []
        deadline = time.monotonic() + timeout
        while not until(seen):
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: condition not met in {timeout} s; "
                                     f"{len(seen)} record(s) read")
            _take(consumer, seen)
        settled = time.monotonic() + settle
        while time.monotonic() < settled:
            _take(consumer, seen)
        return seen
    finally:
        consumer.close()


def _take(consumer: Consumer, seen: list[Message]) -> None:
    for msg in consumer.consume(1000, timeout=0.2):
        assert msg.error() is None, msg.error()
        seen.append(msg)
