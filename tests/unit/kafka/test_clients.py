"""auditrelay.kafka.clients without a broker: the fetch loop's backoff."""

from __future__ import annotations

import pytest


@pytest.mark.asyncio
async def test_fetch_waits_out_a_growing_backoff_after_errors_and_resets_on_success() -> None:
    from aiokafka.errors import KafkaConnectionError

    from auditrelay.kafka.clients import Backoff, fetch

    class Flaky:
        def __init__(self) -> None:
            self.calls = 0

        async def getmany(self, **kwargs: object) -> dict[str, list[int]]:
            self.calls += 1
            if self.calls <= 2:
                raise KafkaConnectionError("broker down")
            return {"tp": [1]}

    backoff = Backoff(0.001, 0.003)
    kafka = Flaky()
    assert await fetch(kafka, backoff, "test") is None
    assert backoff.delay == 0.002
    assert await fetch(kafka, backoff, "test") is None
    assert backoff.delay == 0.003  # capped
    assert await fetch(kafka, backoff, "test", timeout_ms=5) == {"tp": [1]}
    assert backoff.delay == 0.001


@pytest.mark.asyncio
async def test_a_cancelled_start_runs_to_its_end_and_the_cancellation_is_raised_after() -> None:
    import asyncio

    from auditrelay.kafka.clients import started_through_cancellation

    steps: list[str] = []

    async def start() -> None:
        steps.append("connecting")
        await asyncio.sleep(0.05)
        steps.append("connected")

    waiter = asyncio.ensure_future(started_through_cancellation(start()))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert steps == ["connecting", "connected"]


@pytest.mark.asyncio
async def test_a_cancelled_start_that_hangs_is_cancelled_after_the_grace_period(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from auditrelay.kafka import clients as kafka_io

    monkeypatch.setattr(kafka_io, "START_GRACE_SECONDS", 0.05)
    hanging = asyncio.get_running_loop().create_future()

    async def start() -> None:
        await hanging

    waiter = asyncio.ensure_future(kafka_io.started_through_cancellation(start()))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiter, timeout=5)
    assert hanging.cancelled()
