"""Scenario helpers of the pipeline's end-to-end tests (``tests/integration/test_pipeline_*``).

Settings of one test (``scenario``: with the contract's topics, deleted after),
receivers with destinations to them (``set_up``), a stream of events (``emit``,
``Emitter``), what each destination must get (``expected_ids``,
from ``audit.events`` itself, self-audit events included), waiting for it
(``wait_delivered``) and checking it (``assert_exact``).
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from auditrelay.ops.topics import ensure_topics
from auditrelay.producer import Actor, AuditProducer, ProducerConfig
from auditrelay.schemas.settings import Settings
from tests.support.cleanup import topics_cleaned_up
from tests.support.pipeline import (
    CreatedDestination,
    DestinationSpec,
    IdTally,
    WorkerProcess,
    check_batches,
    create_destinations,
    event_ids_on,
    publish_outbox,
)
from tests.support.polling import wait_quiet, wait_until
from tests.support.servers import Receiver, serve
from tests.support.settings import make_settings

USER = Actor(id="usr_e2e", type="user")
#: Event kinds emitted, round robin: several categories, so that filters select.
KINDS: tuple[tuple[str, str], ...] = (
    ("auth", "login_succeeded"), ("billing", "subscription_created"),
    ("workflow", "started"), ("auth", "logged_out"), ("permission", "granted"),
    ("workflow", "failed"), ("team_member", "joined"),
)


def pipeline_settings(bootstrap: str, unique_name: str, tmp_path: Path, **more: object,
                      ) -> Settings:
    """Settings of one scenario (``make_settings``): loopback receivers; quick to react."""
    values: dict[str, object] = {
        "topic_partitions": 3, "delivery_partitions": 3, "allow_private_cidrs": "127.0.0.0/8",
        "batch_window_seconds": 0.5,
        "consumer_session_timeout_seconds": 6, "retry_schedule_seconds": "2,4",
        "retry_jitter": 0, "log_level": "INFO", **more}
    return make_settings(tmp_path, bootstrap, f"test.{unique_name}.", **values)


@contextmanager
def scenario(bootstrap: str, admin: AdminClient, unique_name: str, tmp_path: Path,
             **more: object) -> Iterator[Settings]:
    """``pipeline_settings`` with the contract's topics made; deleted afterwards."""
    settings = pipeline_settings(bootstrap, unique_name, tmp_path, **more)
    with topics_cleaned_up(admin, settings.topics):
        ensure_topics(settings)
        yield settings


# -- the scene: receivers, destinations, events --------------------------------------------


@dataclass
class Sink:
    """One destination and the receiver behind it."""

    dest: CreatedDestination
    receiver: Receiver
    tally: IdTally

    def matches(self, event_type: str, workspace_id: str) -> bool:
        spec = self.dest.spec
        if not spec.enabled or workspace_id != self.dest.workspace_id:
            return False
        # API globs: `*` matches any run of characters, dots included; no other magic.
        return not spec.event_types or any(fnmatch.fnmatchcase(event_type, glob)
                                           for glob in spec.event_types)


def set_up(stack: ExitStack, settings: Settings, workspaces: int,
           specs: Sequence[tuple[int, tuple[str, ...], bool]], *, delay: float = 0.0,
           ) -> tuple[list[str], list[Sink]]:
    """Receivers served on 127.0.0.1, and destinations to them, published to Kafka."""
    receivers = [Receiver(delay=delay) for _ in specs]
    urls = [stack.enter_context(serve(receiver)) for receiver in receivers]
    workspace_ids, created = create_destinations(settings, workspaces, [
        DestinationSpec(ws, f"{url}/hook/{n}", globs, enabled)
        for n, ((ws, globs, enabled), url) in enumerate(zip(specs, urls, strict=True))])
    assert publish_outbox(settings) > 0
    return workspace_ids, [Sink(dest, rx, IdTally(rx))
                           for dest, rx in zip(created, receivers, strict=True)]


def emit(settings: Settings, workspace_ids: Sequence[str], count: int, *,
         per_second: float | None = None,
         metadata: Callable[[int], dict[str, Any]] = lambda n: {"n": n},
         until: threading.Event | None = None) -> list[str]:
    """``count`` events round robin over workspaces and kinds; their ids once all confirmed.

    With ``per_second`` the events are spread over time (a stream), else sent at once.
    Event n carries ``metadata(n)`` (``{"n": n}`` unless told otherwise). Once ``until``
    is set the stream ends early (within 100 events): a stream as long as what it outlasts.
    """
    ids: list[str] = []
    started = time.monotonic()
    with AuditProducer(ProducerConfig.from_settings(settings, client_id="e2e")) as producer:
        for n in range(count):
            if until is not None and n % 100 == 0 and until.is_set():
                break
            category, action = KINDS[(n // len(workspace_ids)) % len(KINDS)]
            event = producer.emit(workspace_ids[n % len(workspace_ids)], category, action,
                                  actor=USER, metadata=metadata(n))
            ids.append(event.id)
            if per_second is not None and n % 100 == 99:
                ahead = started + (n + 1) / per_second - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)  # pacing the stream, not waiting for a result
                producer.poll(0)
        producer.flush(150)
        assert producer.failed == 0
        assert producer.delivered == len(ids)
    return ids


class Emitter(threading.Thread):
    """``emit`` in a thread: the stream keeps flowing while the test breaks things."""

    def __init__(self, settings: Settings, workspace_ids: Sequence[str], count: int,
                 per_second: float) -> None:
        super().__init__(name="e2e-emitter", daemon=True)
        self._args = (settings, workspace_ids, count, per_second)
        self.ids: list[str] = []
        self.error: BaseException | None = None
        #: Set it to end the stream before ``count`` (``emit``'s ``until``).
        self.stop = threading.Event()

    def run(self) -> None:
        settings, workspace_ids, count, per_second = self._args
        try:
            self.ids = emit(settings, workspace_ids, count, per_second=per_second,
                            until=self.stop)
        except BaseException as exc:
            self.error = exc

    def result(self, timeout: float) -> list[str]:
        self.join(timeout)
        assert not self.is_alive(), f"the emitter did not finish within {timeout} s"
        if self.error is not None:
            raise self.error
        return self.ids


def expected_ids(settings: Settings, sinks: Sequence[Sink]) -> list[set[str]]:
    """Per sink, the ids on ``audit.events`` that it must get (self-audit events included)."""
    truth = event_ids_on(settings.kafka_bootstrap, settings.topics.events)
    return [{ce_id for ce_id, ce_type, ws in truth if sink.matches(ce_type, ws)}
            for sink in sinks]


def wait_delivered(sinks: Sequence[Sink], expected: Sequence[set[str]], timeout: float,
                   worker_tails: Sequence[WorkerProcess]) -> None:
    """Until every sink got all its expected ids, then until receivers are quiet for 1.5 s
    (so that a late foreign or duplicate batch would be seen too)."""

    def missing() -> list[int]:
        return [len(want - sink.tally.update()) for sink, want in zip(sinks, expected,
                                                                       strict=True)]

    def report() -> str:
        counts = ", ".join(f"{sink.dest.id}: {len(sink.tally.ids)}/{len(want)} "
                           f"({len(sink.receiver.requests)} requests)"
                           for sink, want in zip(sinks, expected, strict=True))
        return f"events still missing: {missing()} [{counts}]" + "".join(
            w.tail() for w in worker_tails)

    wait_until(lambda: not any(missing()), timeout, report, interval=0.2)
    wait_quiet(lambda: sum(len(sink.receiver.requests) for sink in sinks), 1.5,
               what="receivers kept receiving")


def assert_exact(sinks: Sequence[Sink], expected: Sequence[set[str]]) -> list[int]:
    """Every request valid; each sink got exactly its ids. Returns duplicates per sink."""
    duplicates = []
    for sink, want in zip(sinks, expected, strict=True):
        report = check_batches(sink.receiver.snapshot(), sink.dest.secret,
                               sink.dest.workspace_id)
        assert not (want - report.ids), f"{sink.dest.id}: {len(want - report.ids)} missing"
        assert not (report.ids - want), (
            f"{sink.dest.id}: {len(report.ids - want)} foreign events, e.g. "
            f"{sorted(report.ids - want)[:3]}")
        duplicates.append(report.duplicated)
    return duplicates


def received_events(sinks: Sequence[Sink]) -> int:
    for sink in sinks:
        sink.tally.update()
    return sum(sink.tally.events for sink in sinks)


def group_assignment(admin: AdminClient, group: str, topic: str) -> list[set[int]]:
    """The partitions of ``topic`` each current member of ``group`` holds."""
    description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    return [{tp.partition for tp in member.assignment.topic_partitions if tp.topic == topic}
            for member in description.members]
