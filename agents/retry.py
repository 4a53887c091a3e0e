"""Retry agent: consumes ``audit.retry.{tier}``; produces to the next tier,
``audit.dlq``, ``audit.delivery-attempts`` and ``audit.delivery-status``.

Group ``TopicNames.retry_group``. A record waits until its ``ar_due_ms`` in its
destination's lane (``auditrelay.kafka.keyed``: a lane per topic, partition and
key), so a destination's retries keep their order while every other
destination's go on, and the poll loop keeps polling (no sleep in the poll
loop, no poll interval exceeded). A tier's records are written in roughly due
order, so what a partition holds in memory (at most ``MAX_WAITING`` records)
is what is due next. Retries
survive restarts: they are records in topics, and an offset is committed only
after the record's outcome is confirmed.

Due: the batch is attempted with the delivery agent's own code
(``auditrelay.agents.dispatch``). Success reports the destination ``ok``, which reopens
its circuit; failure moves it to the next tier, or after ``retry_give_up_seconds``
to the dead-letter topic, and disables the destination (``webhook.auto_disabled``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from auditrelay.agents.dispatch import BatchProcessor
from auditrelay.kafka.keyed import Lane
from auditrelay.schemas.topics import RETRY_TIERS, TopicNames

__all__ = ["MAX_WAITING", "RetryHandler", "retry_topics", "seconds_until_due"]

#: Records of one retry partition read ahead and waiting for their due time.
MAX_WAITING = 256


def retry_topics(names: TopicNames) -> list[str]:
    return [names.retry(tier) for tier in RETRY_TIERS]


def seconds_until_due(due_ms: int, now: float) -> float:
    return max(0.0, due_ms / 1000 - now)


class RetryHandler:
    """The lane handler of retry tier partitions: hold until due, then attempt."""

    def __init__(self, processor: BatchProcessor, clock: Callable[[], float]) -> None:
        self._processor = processor
        self._clock = clock

    async def __call__(self, record: Any, lane: Lane) -> None:
        meta = self._processor.parse(record)
        if meta is None:
            await self._processor.dead_letter_malformed(record)
            return
        wait = seconds_until_due(meta.due_ms, self._clock())
        if wait > 0:
            with lane.holding():
                await asyncio.sleep(wait)
        await self._processor.process(meta, record.value or b"", lane.confirm_after)
