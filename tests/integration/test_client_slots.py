"""The delivery client's connection slots (issue #19): an attempt starts when it is sent.

Waiting for one of ``max_connections`` slots is auditrelay's own queue: it is never a
failed attempt and is not part of ``request_timeout_seconds`` nor of the recorded
latency. The deadline still cuts off a request that was sent and not answered in time.
Real receivers on 127.0.0.1 (``tests.support.servers``), plain HTTP.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter

import pytest

from auditrelay.observability import metrics
from auditrelay.wire.client import DeliveryClient, DeliveryConfig
from tests.support.polling import eventually, within_turns
from tests.support.servers import Receiver

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


def waiting() -> float:
    """The slot-waiting gauge (the registry is shared by every test: compare deltas)."""
    return metrics.WORKER_REGISTRY.get_sample_value("auditrelay_delivery_slot_waiting") or 0.0


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_a_congested_worker_records_no_failed_attempt() -> None:
    # 2 000 batches, 10 connections, 20 ms per answer: at least 4 s of queueing in all,
    # twice the 2 s deadline, which must only measure each request on the wire.
    batches = [f'[{{"id":"aud_{n}"}}]'.encode() for n in range(2000)]
    config = DeliveryConfig(allow_private_cidrs=LOOPBACK, max_connections=10,
                            request_timeout_seconds=2.0)
    before = waiting()
    with Receiver(delay=0.02, path="/in") as rx:
        async with DeliveryClient(config) as client:
            sent = asyncio.gather(*(client.post_batch(rx.url, body, {}) for body in batches))
            # All but the 10 in flight wait for a slot, and the gauge shows them.
            await within_turns(lambda: waiting() - before == 1990,
                               lambda: f"{waiting() - before} waiting, not 1990")
            results = await sent
    assert waiting() == before

    failed = Counter(result.error for result in results if not result.ok)
    assert failed == Counter(), f"{sum(failed.values())} failed attempts: {failed}"
    assert all(result.status_code == 200 for result in results)
    # The wait for a slot is not the attempt's latency either.
    assert max(result.latency_ms for result in results) < 2000
    assert Counter(rx.bodies) == Counter(batches)  # every batch exactly once


@pytest.mark.asyncio
async def test_a_request_that_got_a_slot_still_has_its_deadline() -> None:
    config = DeliveryConfig(allow_private_cidrs=LOOPBACK, max_connections=1,
                            request_timeout_seconds=0.5)
    with Receiver(delay=2.0) as rx:
        async with DeliveryClient(config) as client:
            slow = await client.post_batch(rx.url, b"[]", {})
            rx.delay = 0.0
            # The slot came back with the cut-off request: the next one is sent at once.
            after = await client.post_batch(rx.url, b"[]", {})

    assert slow.ok is False
    assert slow.status_code is None
    assert slow.error == "timed out: no complete answer within 0.5 s"
    assert 450 <= slow.latency_ms < 2000
    assert after.ok is True
    assert len(rx.bodies) == 2


@pytest.mark.asyncio
async def test_headers_given_as_a_function_are_made_when_the_request_is_sent() -> None:
    """A signature's timestamp is taken when the slot is free, not before the wait."""
    config = DeliveryConfig(allow_private_cidrs=LOOPBACK, max_connections=1,
                            request_timeout_seconds=5.0)
    loop = asyncio.get_running_loop()
    made_at: list[float] = []

    def headers() -> dict[str, str]:
        made_at.append(loop.time())
        return {"x-made": str(len(made_at))}

    with Receiver(delay=0.5) as rx:
        async with DeliveryClient(config) as client:
            asked_at = loop.time()
            first, second = await asyncio.gather(client.post_batch(rx.url, b"[1]", headers),
                                                 client.post_batch(rx.url, b"[2]", headers))
    assert first.ok
    assert second.ok
    assert len(made_at) == 2
    # The second request waited for the first's answer (0.5 s) before its headers were made.
    assert made_at[1] - asked_at >= 0.45
    assert sorted(r.headers["x-made"] for r in rx.requests) == ["1", "2"]


@pytest.mark.asyncio
async def test_slow_receivers_give_their_slots_back_to_the_others() -> None:
    # Two receivers that answer only when told hold both slots; after slow_after_seconds
    # they move to slow places, and a healthy receiver's request goes out meanwhile.
    release = asyncio.Event()
    arrived = 0

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal arrived
        await reader.readuntil(b"\r\n\r\n")
        arrived += 1
        await release.wait()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = DeliveryConfig(allow_private_cidrs=LOOPBACK, max_connections=2,
                            slow_after_seconds=0.2, max_slow_requests=5,
                            request_timeout_seconds=30.0)
    try:
        with Receiver(path="/in") as rx:
            async with DeliveryClient(config) as client:
                slow = [asyncio.create_task(client.post_batch(
                    f"http://127.0.0.1:{port}/hook", b"[]", {})) for _ in range(2)]
                await eventually(lambda: arrived == 2, 10, "both slow requests sent")
                fast = await asyncio.wait_for(client.post_batch(rx.url, b"[1]", {}), 10)
                assert fast.ok
                assert not any(task.done() for task in slow)  # still unanswered
                release.set()
                results = await asyncio.gather(*slow)
    finally:
        release.set()
        server.close()
    assert all(result.ok for result in results)
    assert rx.bodies == [b"[1]"]
