"""The whole pipeline, end to end, with the worker as a real subprocess (issue 5).

Workspaces and destinations are created through the API's service layer against a
SQLite file under the test's tmp_path; their outbox entries (topics, config
records, self-audit events) are published before the worker starts. Events go
through the real producer onto the real broker; the worker (``python -m ops
worker``, every production agent) routes and delivers them to HTTP receivers on
127.0.0.1. Each test has a topic prefix (so a Faust app id and consumer groups) of
its own, and deletes every topic of it afterwards.

What is checked is what a SIEM sees: the CloudEvents ids it got against the
ids on ``audit.events`` that match its filters (none missing, none foreign;
duplicates only as identical copies), Standard Webhooks signatures, and
batches of 1 to 100 valid CloudEvents.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from auditrelay.ops.topics import ensure_topics
from auditrelay.schemas.settings import Settings
from tests.support.cleanup import topics_cleaned_up
from tests.support.e2e import (
    Emitter,
    assert_exact,
    emit,
    expected_ids,
    group_assignment,
    pipeline_settings,
    received_events,
    set_up,
    wait_delivered,
)
from tests.support.pipeline import WorkerProcess, committed_lag
from tests.support.polling import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
def settings(kafka_bootstrap: str, kafka_admin: AdminClient, unique_name: str,
             tmp_path: Path) -> Iterator[Settings]:
    settings = pipeline_settings(kafka_bootstrap, unique_name, tmp_path)
    with topics_cleaned_up(kafka_admin, settings.topics):
        ensure_topics(settings)
        yield settings


# -- tests ---------------------------------------------------------------------------------


def test_twenty_thousand_events_reach_exactly_the_matching_destinations(
        settings: Settings, tmp_path: Path) -> None:
    specs = [
        (0, (), True),                                                   # everything of ws 0
        (0, ("pro.atmos.auth.*",), True),                                # its auth events
        (1, ("pro.atmos.billing.*", "pro.atmos.workflow.failed"), True),
        (2, (), False),                                                  # disabled
        (2, ("pro.atmos.*.started", "pro.atmos.webhook.*"), True),       # self-audit too
    ]
    with ExitStack() as stack:
        workspace_ids, sinks = set_up(stack, settings, 3, specs)
        worker = stack.enter_context(WorkerProcess(settings, tmp_path / "worker.log"))
        emitted = emit(settings, workspace_ids, 20_000)
        worker.wait_ready()
        expected = expected_ids(settings, sinks)
        assert len(set(emitted)) == 20_000
        wait_delivered(sinks, expected, 90, [worker])
        assert worker.alive(), worker.tail()
        # Offsets follow the work: router and delivery commit what they handled.
        names = settings.topics
        lags = [(names.router_group, names.events), (names.delivery_group, names.deliveries),
                (names.delivery_group, names.parked)]
        wait_until(lambda: not any(committed_lag(settings.kafka_bootstrap, group, topic)
                                   for group, topic in lags), 15,
                   lambda: "offsets not committed: " + str(
                       [committed_lag(settings.kafka_bootstrap, g, t) for g, t in lags]),
                   interval=0.5)

    assert_exact(sinks, expected)
    sizes = {len(sink.receiver.requests) for sink in sinks}
    assert sinks[3].receiver.requests == []  # the disabled destination got nothing
    assert all(len(want) > 500 for n, want in enumerate(expected) if n != 3)
    assert max(sizes) < 20_000 / 50  # batched: far fewer requests than events


def test_kill_9_mid_stream_then_restart_delivers_every_event_at_least_once(
        settings: Settings, tmp_path: Path) -> None:
    specs = [(0, (), True), (1, ("pro.atmos.auth.*", "pro.atmos.workflow.*"), True)]
    log = tmp_path / "worker.log"
    with ExitStack() as stack:
        # Slow receivers keep the stream going long enough to be interrupted.
        workspace_ids, sinks = set_up(stack, settings, 2, specs, delay=0.03)
        first = stack.enter_context(WorkerProcess(settings, log))
        first.wait_ready()
        emitter = Emitter(settings, workspace_ids, 10_000, per_second=2_500)
        emitter.start()
        wait_until(lambda: received_events(sinks) >= 1_000, 60,
                   lambda: "no deliveries before the kill" + first.tail())
        first.kill()
        at_kill = received_events(sinks)
        emitted = emitter.result(60)
        expected = expected_ids(settings, sinks)
        assert at_kill < sum(len(want) for want in expected), "the kill came too late"

        second = stack.enter_context(WorkerProcess(settings, log))
        second.wait_ready()
        wait_delivered(sinks, expected, 75, [second])
        assert second.alive(), second.tail()

    truth = set().union(*expected)
    assert len(emitted) == 10_000
    # Every emitted event whose kind a destination wants is among those it must get.
    assert len(truth & set(emitted)) > 5_000
    duplicates = assert_exact(sinks, expected)
    print(f"killed at {at_kill} events; duplicates per destination after restart: {duplicates}")


def test_a_second_worker_takes_over_when_the_first_is_killed(
        settings: Settings, tmp_path: Path, kafka_admin: AdminClient) -> None:
    specs = [(0, (), True), (1, (), True), (2, ("pro.atmos.auth.*",), True)]
    app_group = settings.topics.router_group
    events = settings.topics.events
    with ExitStack() as stack:
        workspace_ids, sinks = set_up(stack, settings, 3, specs, delay=0.02)
        doomed = stack.enter_context(WorkerProcess(settings, tmp_path / "worker-1.log"))
        doomed.wait_ready()
        survivor = stack.enter_context(WorkerProcess(settings, tmp_path / "worker-2.log"))
        survivor.wait_ready()

        def shared() -> bool:  # both members hold router partitions: both do work
            held = group_assignment(kafka_admin, app_group, events)
            return len(held) == 2 and all(held)

        wait_until(shared, 60, lambda: f"the workers never shared {events}: "
                   f"{group_assignment(kafka_admin, app_group, events)}"
                   + doomed.tail() + survivor.tail(), interval=0.5)
        emitter = Emitter(settings, workspace_ids, 10_000, per_second=2_000)
        emitter.start()
        wait_until(lambda: received_events(sinks) >= 1_000, 60,
                   lambda: "no deliveries before the kill" + doomed.tail() + survivor.tail())
        doomed.kill()
        killed_at = time.monotonic()
        at_kill = received_events(sinks)
        emitter.result(60)
        expected = expected_ids(settings, sinks)
        assert at_kill < sum(len(want) for want in expected), "the kill came too late"
        wait_delivered(sinks, expected, 75, [survivor])
        took = time.monotonic() - killed_at
        assert survivor.alive(), survivor.tail()
        assert group_assignment(kafka_admin, app_group, events) == [{0, 1, 2}]

    assert_exact(sinks, expected)
    print(f"killed at {at_kill} events; all delivered {took:.1f} s after the kill")


def test_routing_and_archiving_in_separate_workers(settings: Settings, tmp_path: Path) -> None:
    """`--stages`: a router worker, an archive worker (its own consumer group) and a
    delivery worker (no Faust at all): every event delivered, and every one archived."""
    from sqlalchemy import create_engine, func, select

    from auditrelay.store.db import ArchivedEvent

    specs = [(0, (), True)]
    with ExitStack() as stack:
        workspace_ids, sinks = set_up(stack, settings, 1, specs)
        workers = [stack.enter_context(WorkerProcess(
            settings.model_copy(update={"worker_stages": stages}), tmp_path / f"{name}.log"))
            for name, stages in (("routing", ("router",)), ("archiving", ("archive",)),
                                 ("delivering", ("delivery",)))]
        for worker in workers:
            worker.wait_ready()
        assert "(delivery only)" in workers[2].output()
        # Only the archive worker yields the CPU to the delivery path (runner._yield_cpu).
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert [os.getpriority(os.PRIO_PROCESS, w.pid) for w in workers] == [
            ours, min(ours + 10, 19), ours]
        emitted = set(emit(settings, workspace_ids, 2_000))
        expected = expected_ids(settings, sinks)
        wait_delivered(sinks, expected, 60, workers)
        engine = create_engine(settings.database_url)
        try:
            def archived() -> set[str]:
                with engine.connect() as conn:
                    return set(conn.scalars(select(ArchivedEvent.id)))

            # One workspace, one destination taking everything: every event on the
            # topic (the emitted ones and the self-audit ones) is expected in both.
            everything = expected[0]
            assert emitted <= everything
            wait_until(lambda: everything <= archived(), 60,
                       lambda: f"{len(everything - archived())} events not archived",
                       interval=0.5)
            with engine.connect() as conn:
                rows = conn.scalar(select(func.count()).select_from(ArchivedEvent))
            assert archived() == everything
        finally:
            engine.dispose()
    assert_exact(sinks, expected)
    assert rows == len(everything)
