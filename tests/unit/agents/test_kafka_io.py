"""agents.kafka_io without a broker: the fetch loop's backoff."""

from __future__ import annotations

import pytest


@pytest.mark.asyncio
async def test_fetch_waits_out_a_growing_backoff_after_errors_and_resets_on_success() -> None:
    from aiokafka.errors import KafkaConnectionError

    from agents.kafka_io import Backoff, fetch

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
