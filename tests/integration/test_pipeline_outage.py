"""The pipeline against a broker outage and against DNS rebinding (issue 5).

The broker restart runs on a private single-node Kafka (free ports, data under
tmp_path), never on the shared one at 127.0.0.1:9092. The rebinding test runs the
delivery pipeline in-process with a resolver that changes its answer between the
destination's creation and its delivery, behind a socket-level guard that refuses
(and records) any connection to an address outside 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from auditrelay.agents.pipeline import running_pipeline
from auditrelay.kafka.admin import admin_client
from auditrelay.ops.kafka_local import LocalKafka, broker_answers
from auditrelay.ops.topics import ensure_topics
from auditrelay.schemas.batches import BatchMeta, batch_body
from auditrelay.schemas.settings import Settings
from auditrelay.schemas.status import DeliveryAttempt
from auditrelay.schemas.topics import RETRY_TIERS
from auditrelay.wire.signing import new_batch_id
from auditrelay.wire.ssrf import IPAddress
from tests.support.cleanup import delete_owned_topics, topics_cleaned_up
from tests.support.e2e import (
    Emitter,
    assert_exact,
    expected_ids,
    pipeline_settings,
    received_events,
    set_up,
    wait_delivered,
)
from tests.support.pipeline import (
    DestinationSpec,
    WorkerProcess,
    create_destinations,
    read_records,
)
from tests.support.polling import eventually, wait_until
from tests.support.servers import free_port

pytestmark = [pytest.mark.slow]

OUTAGE_SECONDS = 30.0


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[LocalKafka]:
    shared = LocalKafka.from_settings(Settings())
    broker = LocalKafka(version=shared.version, port=free_port(), controller_port=free_port(),
                        heap_mb=256, home=tmp_path / "kafka", cache=shared.cache,
                        start_timeout=90)
    try:
        broker.up()
        yield broker
    finally:
        broker.down()


@pytest.mark.timeout(240)
def test_a_30_s_broker_outage_mid_stream_loses_nothing_and_needs_no_restart(
        private_broker: LocalKafka, unique_name: str, tmp_path: Path) -> None:
    settings = pipeline_settings(private_broker.bootstrap, unique_name, tmp_path)
    ensure_topics(settings)
    specs = [(0, (), True), (1, ("pro.atmos.auth.*", "pro.atmos.billing.*"), True)]
    try:
        with ExitStack() as stack:
            workspace_ids, sinks = set_up(stack, settings, 2, specs)
            worker = stack.enter_context(WorkerProcess(settings, tmp_path / "worker.log"))
            worker.wait_ready()
            emitter = Emitter(settings, workspace_ids, 10_000, per_second=1_000)
            emitter.start()
            wait_until(lambda: received_events(sinks) >= 500, 60,
                       lambda: "no deliveries before the outage" + worker.tail())
            private_broker.down()
            down_at = time.monotonic()
            at_outage = received_events(sinks)
            assert not broker_answers(private_broker.bootstrap, timeout=1)

            def outage_over() -> bool:
                assert worker.alive(), "the worker died during the outage" + worker.tail()
                return time.monotonic() - down_at >= OUTAGE_SECONDS

            wait_until(outage_over, OUTAGE_SECONDS + 5, "the outage did not end", interval=0.5)
            assert emitter.is_alive(), "the stream ended before the broker came back"
            private_broker.up()
            emitted = emitter.result(130)  # the producer kept the events through the outage
            expected = expected_ids(settings, sinks)
            assert at_outage < sum(len(want) for want in expected), "the outage came too late"
            wait_delivered(sinks, expected, 90, [worker])
            # The same process, never restarted, did it all.
            assert worker.alive(), "the worker did not survive" + worker.tail()
        assert len(emitted) == 10_000
        assert_exact(sinks, expected)
    finally:
        if broker_answers(private_broker.bootstrap, timeout=1):
            delete_owned_topics(admin_client(private_broker.bootstrap), settings.topics)


# -- DNS rebinding -------------------------------------------------------------------------

REBOUND_NAME = "siem.rebinding.test"
PUBLIC = ipaddress.ip_address("93.184.216.34")
BLOCKED = (ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("169.254.169.254"))
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


class RebindingResolver:
    """A public address while the destination is validated, blocked ones afterwards."""

    def __init__(self) -> None:
        self.rebound = False
        self.calls: list[tuple[str, int, bool]] = []

    def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.calls.append((host, port, self.rebound))
        if host != REBOUND_NAME:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(BLOCKED) if self.rebound else [PUBLIC]


class ConnectGuard:
    """Patches ``socket.socket.connect``/``connect_ex`` (what asyncio, anyio and aiokafka
    connect with): loopback passes, anything else is recorded and refused."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.refused: list[Any] = []
        real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

        def allowed(address: Any) -> bool:
            if not isinstance(address, tuple):
                return True  # a unix socket path: not a network connection
            try:
                return ipaddress.ip_address(address[0]) in LOOPBACK
            except ValueError:
                return False  # a name would be resolved outside our checks: refuse

        def connect(sock: socket.socket, address: Any) -> None:
            if not allowed(address):
                self.refused.append(address)
                raise ConnectionRefusedError(f"test guard: no connection to {address}")
            real_connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> int:
            if not allowed(address):
                self.refused.append(address)
                return 111  # ECONNREFUSED
            return real_connect_ex(sock, address)

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


@pytest.fixture
def rebinding_settings(kafka_bootstrap: str, kafka_admin: AdminClient, unique_name: str,
                       tmp_path: Path) -> Iterator[Settings]:
    # No allow-list at all: only the checks of contract section 3 stand in the way.
    settings = pipeline_settings(kafka_bootstrap, unique_name, tmp_path,
                                 allow_private_cidrs="", retry_schedule_seconds="60")
    with topics_cleaned_up(kafka_admin, settings.topics):
        ensure_topics(settings)
        yield settings


def _header(headers: Any, name: str) -> str | None:
    return next((bytes(v).decode() for k, v in headers or [] if k == name), None)


@pytest.mark.timeout(90)
@pytest.mark.asyncio
async def test_dns_rebinding_never_connects_and_sends_the_batch_to_a_retry_tier(
        rebinding_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = rebinding_settings
    names = settings.topics
    resolver = RebindingResolver()
    workspace_ids, [dest] = create_destinations(
        settings, 1, [DestinationSpec(0, f"https://{REBOUND_NAME}/hook")], resolver=resolver)
    assert resolver.calls == [(REBOUND_NAME, 443, False)]  # checked, and found public
    resolver.rebound = True
    guard = ConnectGuard(monkeypatch)

    async with running_pipeline(settings, resolver=resolver) as pipeline:
        # Its outbox publisher publishes the config record.
        await eventually(lambda: pipeline.processor.lookup.get(dest.id) is not None, 30,
                         "the destination's config reached the pipeline")
        event = json.dumps({"specversion": "1.0", "id": f"aud_{new_batch_id()[4:]}"}).encode()
        body = batch_body([event])
        meta = BatchMeta(new_batch_id(), dest.id, workspace_ids[0], 1, int(time.time() * 1000))

        def produce() -> None:
            producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
            producer.produce(names.deliveries, key=dest.id.encode(), value=body,
                             headers=list[tuple[str, str | bytes | None]](meta.headers()))
            assert producer.flush(30) == 0

        await asyncio.to_thread(produce)
        attempts = await asyncio.to_thread(
            read_records, settings.kafka_bootstrap, names.delivery_attempts,
            lambda s: len(s) >= 1, 30)
        retried = await asyncio.to_thread(
            read_records, settings.kafka_bootstrap, names.retry(RETRY_TIERS[0]),
            lambda s: len(s) >= 1, 30)

    assert guard.refused == []  # nothing ever tried to reach 10.0.0.1 or 169.254.169.254
    assert (REBOUND_NAME, 443, True) in resolver.calls  # resolved again at delivery time
    record = DeliveryAttempt.model_validate_json(attempts[0].value() or b"")
    assert (record.batch_id, record.outcome, record.status_code, record.tier) == (
        meta.batch_id, "retry", None, RETRY_TIERS[0])
    assert record.error is not None
    assert record.error.startswith("refused before connecting"), record.error
    assert "resolves to an address in a private or reserved range" in record.error
    # Tenants read this error (deliveries API, status): it never names the address.
    assert "10.0.0.1" not in record.error, record.error
    assert "169.254.169.254" not in record.error, record.error
    [moved] = retried
    assert moved.value() == body
    assert _header(moved.headers(), "ar_batch_id") == meta.batch_id
    assert _header(moved.headers(), "ar_attempt") == "1"
