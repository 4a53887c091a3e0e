"""Delivery and retry agents end to end: real broker, real HTTP receivers on loopback.

Each test runs a ``DeliveryPipeline`` (with its own registry follower) under a
topic prefix of its own, writes destination configs and batch records straight
onto the topics (so the router is not involved), and watches what receivers on
127.0.0.1 get and what lands on the status, attempt and dead-letter topics.
The retry schedule is compressed to 1, 2, 4 seconds without jitter.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from confluent_kafka import Message, Producer
from confluent_kafka.admin import AdminClient
from standardwebhooks.webhooks import Webhook

from auditrelay.agents.pipeline import DeliveryPipeline, running_pipeline
from auditrelay.ops.topics import ensure_topics
from auditrelay.schemas.batches import (
    REASON_DELETED,
    REASON_DISABLED,
    REASON_EXHAUSTED,
    BatchMeta,
    batch_body,
)
from auditrelay.schemas.destinations import url_hint
from auditrelay.schemas.settings import Settings
from auditrelay.schemas.status import DeliveryAttempt, DestinationStatus
from auditrelay.store.db import Destination, Workspace
from auditrelay.store.engine import Store, make_engine, upgrade_database
from auditrelay.store.mutations import config_of
from auditrelay.wire.secrets import SecretBox
from auditrelay.wire.signing import generate_secret, new_batch_id
from tests.support.cleanup import topics_cleaned_up
from tests.support.pipeline import read_records
from tests.support.polling import eventually
from tests.support.servers import Receiver, serve
from tests.support.settings import make_settings

WORKSPACE = "ws_delivery"

# -- the environment of one test -----------------------------------------------------------


@dataclass
class Env:
    settings: Settings
    admin: AdminClient
    box: SecretBox
    store: Store

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka_bootstrap

    async def add_destination(self, url: str, dest_id: str | None = None, *,
                              options: dict[str, Any] | None = None) -> tuple[str, str]:
        """A webhook destination's row and config record; returns (id, secret)."""
        dest_id = dest_id or f"dst_{new_batch_id()[4:].lower()}"
        secret = generate_secret()
        now = datetime.now(UTC)
        with self.store.transaction() as session:
            if session.get(Workspace, WORKSPACE) is None:
                session.add(Workspace(id=WORKSPACE, name="w", plan="enterprise"))
                session.flush()
            row = Destination(id=dest_id, workspace_id=WORKSPACE, name="siem",
                              url_encrypted=self.box.encrypt(url), url_hint=url_hint(url),
                              secret_encrypted=self.box.encrypt(secret), version=1,
                              created_at=now, updated_at=now, enabled=True, event_types=[],
                              kind="webhook", options=options or {})
            session.add(row)
            session.flush()
            config = config_of(row, forwarding=True)
        await self.produce(self.settings.topics.destinations, dest_id.encode(),
                           config.model_dump_json().encode())
        return dest_id, secret

    async def add_batch(self, dest_id: str, n_events: int = 2) -> tuple[BatchMeta, bytes]:
        events = [json.dumps({"id": f"aud_{new_batch_id()[4:]}", "n": i}).encode()
                  for i in range(n_events)]
        body = batch_body(events)
        meta = BatchMeta(new_batch_id(), dest_id, WORKSPACE, n_events, int(time.time() * 1000))
        await self.produce(self.settings.topics.deliveries, dest_id.encode(), body,
                           meta.headers())
        return meta, body

    async def produce(self, topic: str, key: bytes, value: bytes | None,
                      headers: list[tuple[str, bytes]] | None = None) -> None:
        def _send() -> None:
            producer = Producer({"bootstrap.servers": self.bootstrap})
            producer.produce(topic, key=key, value=value, headers=headers or [])
            assert producer.flush(30) == 0

        await asyncio.to_thread(_send)

    async def read(self, topic: str, until: Callable[[list[Message]], bool],
                   timeout: float = 30.0) -> list[Message]:
        """Every record of ``topic`` once ``until`` holds for them; fails after ``timeout``."""
        return await asyncio.to_thread(read_records, self.bootstrap, topic, until, timeout)

    def destination_row(self, dest_id: str) -> Destination:
        with self.store.transaction() as session:
            row = session.get(Destination, dest_id)
            assert row is not None
            return row


def header(msg: Message, name: str) -> str | None:
    for key, value in msg.headers() or []:
        if key == name:
            return bytes(value).decode()
    return None


@pytest.fixture
def settings(kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> Settings:
    return make_settings(tmp_path, kafka_bootstrap, f"test.{unique_name}.",
                         # One delivery partition: every destination shares it, so
                         # isolation is the lanes' doing, not the partitioner's.
                         topic_partitions=2, delivery_partitions=1,
                         allow_private_cidrs="127.0.0.0/8",
                         retry_schedule_seconds="1,2,4", retry_jitter=0)


@pytest.fixture
def env(settings: Settings, kafka_admin: AdminClient, unique_name: str) -> Iterator[Env]:
    # Also the internal topics of the Faust worker of ``test_the_faust_worker_...``.
    with topics_cleaned_up(kafka_admin, settings.topics, f"test-{unique_name}-"):
        ensure_topics(settings)
        assert settings.secret_key is not None
        upgrade_database(settings.database_url)
        store = Store(make_engine(settings.database_url))
        try:
            yield Env(settings, kafka_admin, SecretBox(settings.secret_key.get_secret_value()),
                      store)
        finally:
            store.dispose()


@pytest_asyncio.fixture
async def pipeline(env: Env) -> AsyncIterator[DeliveryPipeline]:
    async with running_pipeline(env.settings) as running:
        yield running


# -- tests ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_delivers_signed_batches_in_order_and_records_status(env: Env) -> None:
    receiver = Receiver()
    with serve(receiver) as url:
        dest_id, secret = await env.add_destination(url + "/hook")
        sent = [await env.add_batch(dest_id, n) for n in (1, 2, 3)]
        async with running_pipeline(env.settings):
            await eventually(lambda: len(receiver.requests) >= 3, 30, "three deliveries")

    assert receiver.bodies == [body for _, body in sent]  # same bytes, same order
    webhook = Webhook(secret)
    for request, (meta, _body) in zip(receiver.requests, sent, strict=True):
        webhook.verify(request.body, request.headers)  # raises if the signature is wrong
        assert request.headers["webhook-id"] == meta.batch_id
        assert request.headers["x-webhook-id"] == meta.batch_id
        assert request.headers["content-type"] == "application/cloudevents-batch+json"
        assert request.headers["user-agent"].startswith("auditrelay/")
    assert json.loads(sent[2][1])[2]["n"] == 2

    attempts = await env.read(env.settings.topics.delivery_attempts, lambda s: len(s) >= 3)
    records = [DeliveryAttempt.model_validate_json(m.value() or b"") for m in attempts]
    assert {(r.batch_id, r.outcome, r.status_code, r.attempt) for r in records} == {
        (meta.batch_id, "delivered", 200, 1) for meta, _ in sent}
    statuses = await env.read(env.settings.topics.delivery_status, lambda s: len(s) >= 1)
    latest = DestinationStatus.model_validate_json(statuses[-1].value() or b"")
    assert (latest.destination_id, latest.state, latest.last_delivery_ok) == (dest_id, "ok", True)


@pytest.mark.asyncio
async def test_gzip_sends_compressed_batches_signed_over_the_uncompressed_body(
        env: Env) -> None:
    receiver = Receiver()
    with serve(receiver) as url:
        dest_id, secret = await env.add_destination(url + "/hook", options={"gzip": True})
        meta, body = await env.add_batch(dest_id, 3)
        async with running_pipeline(env.settings):
            await eventually(lambda: len(receiver.requests) >= 1, 30, "a delivery")
    [request] = receiver.requests
    assert request.headers["content-encoding"] == "gzip"
    assert gzip.decompress(request.body) == body
    Webhook(secret).verify(gzip.decompress(request.body), request.headers)
    assert request.headers["webhook-id"] == meta.batch_id


@pytest.mark.slow
@pytest.mark.asyncio
async def test_503_then_200_backs_off_keeps_order_and_probes_only_the_first_batch(
        env: Env, pipeline: DeliveryPipeline) -> None:
    receiver = Receiver(lambda n: (503, []) if n < 2 else (200, []))
    with serve(receiver) as url:
        dest_id, _ = await env.add_destination(url)
        sent = [await env.add_batch(dest_id) for _ in range(3)]
        await eventually(lambda: len(receiver.requests) >= 5, 40, "five requests")
        bodies = [body for _, body in sent]
        # The first batch is attempted three times; the others wait behind the circuit.
        assert receiver.bodies == [bodies[0], bodies[0], bodies[0], bodies[1], bodies[2]]
        times = [r.at for r in receiver.requests]
        assert times[1] - times[0] >= 0.9  # first retry after ~1 s
        assert times[2] - times[1] >= 1.9  # second after ~2 s
        ids = {r.headers["webhook-id"] for r in receiver.requests[:3]}
        assert ids == {sent[0][0].batch_id}  # identical on every retry

    attempts = await env.read(env.settings.topics.delivery_attempts, lambda s: len(s) >= 5)
    records = [DeliveryAttempt.model_validate_json(m.value() or b"") for m in attempts]
    first = [r for r in records if r.batch_id == sent[0][0].batch_id]
    assert [(r.attempt, r.outcome, r.tier) for r in first] == [
        (1, "retry", "10s"), (2, "retry", "1m"), (3, "delivered", None)]


@pytest.mark.slow
@pytest.mark.asyncio
async def test_410_disables_the_destination_and_dead_letters_its_backlog(
        env: Env, pipeline: DeliveryPipeline) -> None:
    receiver = Receiver(lambda _: (410, []))
    with serve(receiver) as url:
        dest_id, _ = await env.add_destination(url)
        sent = [await env.add_batch(dest_id) for _ in range(3)]
        names = env.settings.topics
        dlq = await env.read(names.dlq, lambda s: len(s) >= 3)
        assert len(receiver.requests) == 1  # nothing more was sent after the 410

    assert [header(m, "ar_batch_id") for m in dlq] == [meta.batch_id for meta, _ in sent]
    assert {header(m, "ar_reason") for m in dlq} == {REASON_DISABLED}
    assert [m.value() for m in dlq] == [body for _, body in sent]
    row = env.destination_row(dest_id)
    assert (row.enabled, row.disabled_reason) == (False, "gone")
    events = await env.read(names.events, lambda s: any(
        header(m, "ce_type") == "pro.atmos.webhook.disabled" for m in s))
    disabled = [json.loads(m.value() or b"") for m in events
                if header(m, "ce_type") == "pro.atmos.webhook.disabled"]
    assert disabled[0]["data"]["target"]["id"] == dest_id
    configs = await env.read(names.destinations, lambda s: len(s) >= 2)
    assert json.loads(configs[-1].value() or b"")["enabled"] is False
    statuses = await env.read(names.delivery_status, lambda s: any(
        json.loads(m.value() or b"")["state"] == "disabled" for m in s))
    assert statuses


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_batch_of_a_deleted_destination_is_dead_lettered_with_the_reason(
        env: Env, pipeline: DeliveryPipeline) -> None:
    names = env.settings.topics
    dest_id, _ = await env.add_destination("https://127.0.0.1:9/never-called")
    await env.produce(names.destinations, dest_id.encode(), None)  # deleted: a tombstone
    gone, _ = await env.add_batch(dest_id)
    dlq = await env.read(names.dlq, lambda s: len(s) >= 1)
    assert [(m.key(), header(m, "ar_batch_id"), header(m, "ar_reason")) for m in dlq] == [
        (dest_id.encode(), gone.batch_id, REASON_DELETED)]


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_batch_that_comes_before_its_destinations_config_waits_for_it(
        env: Env, pipeline: DeliveryPipeline) -> None:
    # Another worker's router saw the new destination first; this worker's registry
    # has not read its config yet when the batch arrives.
    receiver = Receiver()
    with serve(receiver) as url:
        dest_id = f"dst_{new_batch_id()[4:].lower()}"
        _, body = await env.add_batch(dest_id)
        _, runner = pipeline._runners[0]  # the delivery stage's
        # A lane is keyed by (partition, destination id).
        await eventually(lambda: any(key[-1] == dest_id.encode()  # type: ignore[index]
                                     for key in runner.lanes), 30,
                         "the batch in its lane, waiting for a config")
        assert pipeline.processor.lookup.get(dest_id) is None
        await env.add_destination(url + "/hook", dest_id=dest_id)
        await eventually(lambda: len(receiver.requests) >= 1, 30, "the early batch delivered")
    assert receiver.bodies == [body]
    attempts = await env.read(env.settings.topics.delivery_attempts, lambda s: len(s) >= 1)
    assert [json.loads(m.value())["outcome"] for m in attempts] == ["delivered"]


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_redirect_is_not_followed_and_counts_as_a_failure(
        env: Env, pipeline: DeliveryPipeline) -> None:
    target = Receiver()
    with serve(target) as target_url:
        receiver = Receiver(lambda n: (302, [(b"location", target_url.encode())]) if n == 0
                            else (200, []))
        with serve(receiver) as url:
            dest_id, _ = await env.add_destination(url)
            _meta, _ = await env.add_batch(dest_id)
            await eventually(lambda: len(receiver.requests) >= 2, 30, "retry after redirect")
    assert target.requests == []
    attempts = await env.read(env.settings.topics.delivery_attempts, lambda s: len(s) >= 2)
    records = [DeliveryAttempt.model_validate_json(m.value() or b"") for m in attempts]
    assert [(r.outcome, r.status_code) for r in records] == [("retry", 302), ("delivered", 200)]
    assert "redirect" in (records[0].error or "")


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_hanging_destination_does_not_delay_another(
        env: Env, pipeline: DeliveryPipeline) -> None:
    accepted = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def hang(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accept, read nothing, answer never
        accepted.set()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    receiver = Receiver()
    try:
        with serve(receiver) as url:
            hanging_id, _ = await env.add_destination(f"http://127.0.0.1:{port}/")
            fine_id, _ = await env.add_destination(url)
            # Both partitions assigned and working before the measurement.
            await env.add_batch(fine_id)
            await eventually(lambda: len(receiver.requests) >= 1, 30, "warm-up delivery")
            await env.add_batch(hanging_id)
            await asyncio.wait_for(accepted.wait(), 30)
            started = time.monotonic()
            await env.add_batch(fine_id)
            arrived = await eventually(lambda: len(receiver.requests) >= 2, 10,
                                       "delivery next to a hanging one")
            assert arrived - started < 1.0
    finally:
        for writer in held:
            writer.close()
        server.close()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_failing_destination_parks_its_backlog_and_drains_it_in_order(
        env: Env, pipeline: DeliveryPipeline) -> None:
    failing = Receiver(lambda n: (503, []) if n < 2 else (200, []))
    healthy = Receiver()
    with serve(failing) as failing_url, serve(healthy) as healthy_url:
        failing_id, _ = await env.add_destination(failing_url)
        healthy_id, _ = await env.add_destination(healthy_url)
        first = await env.add_batch(failing_id)
        await eventually(lambda: len(failing.requests) >= 1, 30, "the first 503")
        backlog = [await env.add_batch(failing_id) for _ in range(8)]
        # The same partition goes on for another destination while the circuit is open.
        await env.add_batch(healthy_id)
        await eventually(lambda: len(healthy.requests) >= 1, 10, "the healthy delivery")
        assert len(failing.requests) <= 2
        parked = await env.read(env.settings.topics.parked, lambda s: len(s) >= 1)
        assert {m.key() for m in parked} == {failing_id.encode()}
        await eventually(lambda: len(failing.requests) >= 3 + len(backlog), 40, "the drain")
    sent = [first, *backlog]
    delivered = [r.headers["webhook-id"] for r in failing.requests if r.status == 200]
    assert delivered == [meta.batch_id for meta, _ in sent]  # once each, in order


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_slow_destination_parks_what_its_lane_cannot_hold_and_keeps_its_order(
        env: Env, pipeline: DeliveryPipeline) -> None:
    slow = Receiver(delay=0.3)
    with serve(slow) as url:
        dest_id, _ = await env.add_destination(url)
        sent = [await env.add_batch(dest_id, 1) for _ in range(12)]
        await eventually(lambda: len(slow.requests) >= len(sent), 40, "every batch")
    assert [r.headers["webhook-id"] for r in slow.requests] == [m.batch_id for m, _ in sent]
    parked = await env.read(env.settings.topics.parked, lambda s: len(s) >= 1)
    assert {m.key() for m in parked} == {dest_id.encode()}


@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_next_owner_drains_parked_batches_before_newer_ones(env: Env) -> None:
    receiver = Receiver(status=503)
    with serve(receiver) as url:
        dest_id, _ = await env.add_destination(url)
        async with running_pipeline(env.settings):
            first = await env.add_batch(dest_id)
            await eventually(lambda: len(receiver.requests) >= 1, 30, "the first 503")
            backlog = [await env.add_batch(dest_id) for _ in range(3)]
            await env.read(env.settings.topics.parked, lambda s: len(s) >= 3)
        receiver.status = 200
        # Written while no worker runs: the next owner must not send it before the
        # parked ones, which only reading audit.parked at its assignment tells it.
        newer = await env.add_batch(dest_id)
        async with running_pipeline(env.settings):
            await eventually(lambda: sum(r.status == 200 for r in receiver.requests) >= 5, 40,
                             "the parked batches and the newer one")
    delivered = [r.headers["webhook-id"] for r in receiver.requests if r.status == 200]
    assert delivered == [m.batch_id for m, _ in (first, *backlog, newer)]


@pytest.mark.slow
@pytest.mark.asyncio
async def test_giving_up_dead_letters_auto_disables_and_emits_the_event(
        settings: Settings, env: Env) -> None:
    quick = settings.model_copy(update={"retry_give_up_seconds": 2.5})
    receiver = Receiver(lambda _: (500, []))
    with serve(receiver) as url:
        dest_id, _ = await env.add_destination(url)
        first, _ = await env.add_batch(dest_id)
        backlog, _ = await env.add_batch(dest_id)
        async with running_pipeline(quick):
            names = settings.topics
            dlq = await env.read(names.dlq, lambda s: len(s) >= 2, timeout=40)
            # The worker's outbox publishes the event after the dead letters, in the
            # background: it is looked for while the worker still runs.
            events = await env.read(names.events, lambda s: any(
                header(m, "ce_type") == "pro.atmos.webhook.auto_disabled" for m in s))
    # Attempts at ~0, ~1 and ~3 s: the third is past the 2.5 s limit.
    assert [r.body for r in receiver.requests] == [receiver.requests[0].body] * 3
    assert [(header(m, "ar_batch_id"), header(m, "ar_reason")) for m in dlq] == [
        (first.batch_id, REASON_EXHAUSTED), (backlog.batch_id, REASON_DISABLED)]
    assert header(dlq[0], "ar_detail") == "HTTP 500"
    row = env.destination_row(dest_id)
    assert (row.enabled, row.disabled_reason) == (False, "failing")
    assert events
    statuses = await env.read(names.delivery_status, lambda s: any(
        json.loads(m.value() or b"")["state"] == "disabled" for m in s))
    assert statuses


@pytest.mark.slow
@pytest.mark.asyncio
async def test_retry_after_is_honoured(env: Env, pipeline: DeliveryPipeline) -> None:
    receiver = Receiver(lambda n: (503, [(b"retry-after", b"3")]) if n == 0 else (200, []))
    with serve(receiver) as url:
        dest_id, _ = await env.add_destination(url)
        await env.add_batch(dest_id)
        await eventually(lambda: len(receiver.requests) >= 2, 30, "retry after Retry-After")
    gap = receiver.requests[1].at - receiver.requests[0].at
    assert 2.9 <= gap < 6  # 3 s asked (the schedule alone would have waited 1 s)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_destination_created_while_running_is_picked_up_within_10_s(
        env: Env, pipeline: DeliveryPipeline) -> None:
    receiver = Receiver()
    with serve(receiver) as url:
        created = time.monotonic()
        dest_id, _ = await env.add_destination(url)
        await env.add_batch(dest_id)
        arrived = await eventually(lambda: len(receiver.requests) >= 1, 15, "new destination")
    assert arrived - created < 10


@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_faust_worker_runs_the_pipeline(env: Env, unique_name: str) -> None:
    from auditrelay.agents import pipeline as pipeline_module
    from auditrelay.agents import router
    from auditrelay.agents.app import create_app

    # The router gives the Faust consumer a topic; an app with none does not start.
    app = create_app(env.settings, app_id=f"test-{unique_name}",
                     registrars=[router.register, pipeline_module.register])
    receiver = Receiver()
    with serve(receiver) as url:
        dest_id, _ = await env.add_destination(url)
        _, body = await env.add_batch(dest_id)
        await app.start()
        try:
            await eventually(lambda: len(receiver.requests) >= 1, 60, "delivery by the worker")
        finally:
            await app.stop()
    assert receiver.bodies == [body]


@pytest.mark.slow
@pytest.mark.asyncio
async def test_two_workers_each_get_the_same_partitions_of_deliveries_and_parked(
        env: Env, kafka_admin: AdminClient, unique_name: str) -> None:
    wide = env.settings.model_copy(update={
        "delivery_partitions": 4, "topic_prefix": f"test.{unique_name}.wide."})
    with topics_cleaned_up(kafka_admin, wide.topics):
        ensure_topics(wide)

        def owned(running: DeliveryPipeline) -> dict[str, set[int]]:
            kafka, _ = running._runners[0]  # the delivery consumer
            out: dict[str, set[int]] = {}
            for tp in kafka.assignment():
                out.setdefault(tp.topic, set()).add(tp.partition)
            return out

        async with running_pipeline(wide) as first, running_pipeline(wide) as second:
            await eventually(lambda: all(len(owned(p).get(wide.topics.deliveries, ())) == 2
                                         for p in (first, second)), 60, "two partitions each")
            for running in (first, second):
                split = owned(running)
                assert split[wide.topics.deliveries] == split[wide.topics.parked]
