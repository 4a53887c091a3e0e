"""auditrelay.kafka.clients against the real broker: a cancelled start leaks no connection.

aiokafka's bootstrap leaks its connection when it is cancelled in the middle of
its metadata request (aio-libs/aiokafka#715). When that moment comes depends on
how fast the broker answers, so each test first times a few whole starts on this
broker, then cancels starts at delays spread over the quickest of them (every
one lands inside a start, whether the broker is warm or cold), and checks every
connection the client opened is closed once it stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka.conn import AIOKafkaConnection

from auditrelay.kafka.clients import RecordSink, consumer, start_consumer

STEPS = 24  # cancel points per test, spread over the quickest start
TIMED_STARTS = 5


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[AIOKafkaConnection]:
    """Every aiokafka connection created during the test (a record, not a fake)."""
    made: list[AIOKafkaConnection] = []
    original = AIOKafkaConnection.__init__

    def recording(self: AIOKafkaConnection, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(AIOKafkaConnection, "__init__", recording)
    return made


async def quickest_start(start: Callable[[], Awaitable[None]],
                         stop: Callable[[], Awaitable[None]]) -> float:
    """Seconds of the quickest of a few whole starts against this broker, as it is now."""
    took = []
    for _ in range(TIMED_STARTS):
        began = time.perf_counter()
        await start()
        took.append(time.perf_counter() - began)
        await stop()
    return min(took)


async def timed(start: Callable[[], Awaitable[None]]) -> float:
    began = time.perf_counter()
    await start()
    return time.perf_counter() - began


async def cancel_each_start(start: Callable[[], Awaitable[None]],
                            stop: Callable[[], Awaitable[None]],
                            opened: list[AIOKafkaConnection]) -> None:
    quickest = await quickest_start(start, stop)
    opened.clear()
    cancelled = attempts = 0
    step = 0
    # A start that beats its delay shows the broker has got quicker than it was when
    # timed (a loaded machine settling): the quickest start is lowered to it and the
    # step tried again, so the delays keep landing inside starts.
    while step < STEPS and attempts < 3 * STEPS:
        attempts += 1
        delay = quickest * step / STEPS  # from "before it began" to just before it ends
        task = asyncio.ensure_future(timed(start))
        await asyncio.sleep(delay)
        if task.cancel():
            cancelled += 1
            step += 1
            with pytest.raises(asyncio.CancelledError):  # the caller still learns of it
                await task
        else:
            quickest = min(quickest, await task)  # it had finished, and must have succeeded
        await stop()
        assert opened, "the start never got as far as a connection"
        left = [conn for conn in opened if conn.connected()]
        assert not left, f"cancelled after {delay * 1000:.2f} ms: {left} still open"
        opened.clear()
    # Every delay is shorter than the quickest start seen: nearly all must have been
    # cancelled, or the test checked nothing.
    assert cancelled >= STEPS // 2, f"only {cancelled} of {STEPS} starts were cancelled"


@pytest.mark.asyncio
async def test_a_consumer_start_cancelled_at_any_moment_leaves_no_connection_open(
        kafka_bootstrap: str, topic: str, group_id: str,
        opened: list[AIOKafkaConnection]) -> None:
    clients: list[Any] = []

    async def start() -> None:
        clients.append(consumer(kafka_bootstrap, group_id=group_id, client_id="test-cancel"))
        await start_consumer(clients[-1], topics=[topic])

    async def stop() -> None:
        await clients[-1].stop()

    await cancel_each_start(start, stop, opened)


@pytest.mark.asyncio
async def test_a_producer_start_cancelled_at_any_moment_leaves_no_connection_open(
        kafka_bootstrap: str, opened: list[AIOKafkaConnection]) -> None:
    sinks: list[RecordSink] = []

    async def start() -> None:
        sinks.append(RecordSink(kafka_bootstrap, client_id="test-cancel"))
        await sinks[-1].start()

    async def stop() -> None:
        await sinks[-1].stop()

    await cancel_each_start(start, stop, opened)
