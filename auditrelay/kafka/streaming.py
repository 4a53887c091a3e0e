"""Reading ``audit.events`` for a stage that holds records across reads (the router).

:mod:`auditrelay.kafka.rounds` gathers a round and commits it once the stage settled all
of it; a round therefore waits for its last record, and a batch full after 100
events waited for the round (issue #14). A :class:`StreamReader` instead hands the
stage whatever each fetch returned, at once, and the stage keeps what is not ready
yet (a destination's partial batch) for later reads. What the stage holds is what
the reader must not commit past; so the stage says, per partition, the lowest
offset it still holds (:meth:`Stage.held`), and the reader commits up to that
(:func:`commit_points`). Between reads the reader wakes the stage when something
it holds falls due (:meth:`Stage.next_due`), so idle partitions still flush.

Guarantees:

- At least once: an offset is committed only once every record before it was
  produced and confirmed by the broker (the stage's :meth:`Stage.step` and
  :meth:`Stage.flush` return only then), or is held by the stage (then the commit
  stops before it). Cancelled in the middle of a step, the reader commits only
  what it could commit after the step before (a batch of held records may be on
  its way but unconfirmed).
- One step at a time, in fetch order (hence in partition order).
- Rebalances: the revocation callback waits for the step in hand, has the stage
  flush everything it holds (produced and confirmed), commits, and invalidates
  what was fetched but not stepped yet; the reader seeks the partitions it keeps
  back to the first record it dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from auditrelay.kafka.backoff import Backoff
from auditrelay.kafka.clients import commit, fetch, start_consumer
from auditrelay.kafka.rounds import rewind

__all__ = ["Stage", "StreamReader", "commit_points", "poll_timeout_ms", "read_stream"]

log = logging.getLogger(__name__)

_MAX_BACKOFF = 30.0

Part = tuple[str, int]


class Stage(Protocol):
    """What a :class:`StreamReader` drives."""

    async def step(self, records: list[Any], now: float) -> None:
        """Take ``records`` (maybe none) and produce what is ready at ``now`` (epoch s);
        return once the broker confirmed it. Raises nothing but cancellation."""

    async def flush(self) -> None:
        """Produce everything held; return once the broker confirmed it."""

    def next_due(self) -> float | None:
        """When something held falls due (epoch seconds), or None if nothing is held."""

    def held(self) -> Mapping[Part, int]:
        """Per (topic, partition), the lowest offset still held."""


def commit_points(consumed: Mapping[Part, int], held: Mapping[Part, int],
                  committed: Mapping[Part, int]) -> dict[Part, int]:
    """The offsets to commit now: per partition, the next offset after what was consumed,
    but not past the lowest offset still held; only those beyond what is committed."""
    out: dict[Part, int] = {}
    for part, offset in consumed.items():
        lowest = held.get(part)
        if lowest is not None and lowest < offset:
            offset = lowest
        if offset > committed.get(part, -1):
            out[part] = offset
    return out


def poll_timeout_ms(now: float, due: float | None, longest_ms: int) -> int:
    """How long a fetch may wait for records: until the next thing held is due, at most
    ``longest_ms``."""
    if due is None:
        return longest_ms
    return max(0, min(longest_ms, round((due - now) * 1000)))


class StreamReader(ConsumerRebalanceListener):  # type: ignore[misc]
    """Feeds ``stage`` from ``consumer`` and commits behind it; its rebalance listener.

    Start and subscribe the consumer with ``listener=reader``
    (``auditrelay.kafka.clients.start_consumer``), then ``await reader.run()`` until
    cancelled; then :meth:`close`.
    """

    def __init__(self, consumer: AIOKafkaConsumer, stage: Stage, *, name: str,
                 max_records: int, poll_timeout_ms: int = 500,
                 commit_interval: float = 1.0) -> None:
        self._consumer = consumer
        self._stage = stage
        self._name = name
        self._max_records = max_records
        self._poll_timeout_ms = poll_timeout_ms
        # Commits at most this often (and when idle, at a rebalance and at the end): a
        # commit is a broker round trip the next step waits for. A crash re-reads at
        # most this much, plus what the stage held.
        self._commit_interval = commit_interval
        self._last_commit = 0.0
        self._lock = asyncio.Lock()
        self._generation = 0
        #: Per partition, the offset after the last record stepped.
        self._consumed: dict[Part, int] = {}
        self._committed: dict[Part, int] = {}
        #: What may be committed, as worked out after the last complete step.
        self._ready: dict[Part, int] = {}
        self._fetch_backoff = Backoff(0.5, _MAX_BACKOFF)
        #: Steps taken, for tests and logs.
        self.steps = 0

    # -- rebalance listener ------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self._generation += 1
        async with self._lock:  # the step in hand finishes first
            await self._stage.flush()
            self._ready = commit_points(self._consumed, {}, self._committed)
            await self._commit()
            for tp in revoked:  # not ours any more; the next owner starts at the commit
                part = (tp.topic, tp.partition)
                self._consumed.pop(part, None)
                self._committed.pop(part, None)
                self._ready.pop(part, None)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Nothing to do: a new assignment starts each partition at its committed offset."""

    # -- loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            generation = self._generation
            timeout = poll_timeout_ms(time.time(), self._stage.next_due(),
                                      self._poll_timeout_ms)
            fetched = await fetch(self._consumer, self._fetch_backoff, self._name,
                                  timeout_ms=timeout, max_records=self._max_records)
            records: list[Any] = []
            for part in (fetched or {}).values():
                records.extend(part)
            async with self._lock:
                if generation != self._generation:
                    # Partitions moved during the fetch; the revocation flushed and
                    # committed what came before. Those still ours restarted at their
                    # committed offsets, but this fetch moved their positions on.
                    rewind(self._consumer, records)
                    continue
                now = time.time()
                due = self._stage.next_due()
                if records or (due is not None and due <= now):
                    await self._step(records, now)
                if self._ready and (not records or time.monotonic() - self._last_commit
                                    >= self._commit_interval):
                    await self._commit()

    async def _step(self, records: list[Any], now: float) -> None:
        # Cancelled during the step, ``_ready`` (worked out after the step before) is still
        # safe: a batch of held records may be on its way now, but unconfirmed.
        await self._stage.step(records, now)
        self.steps += 1
        consumed = self._consumed
        for record in records:
            consumed[(record.topic, record.partition)] = record.offset + 1
        self._ready = commit_points(consumed, self._stage.held(), self._committed)

    async def _commit(self) -> None:
        self._last_commit = time.monotonic()
        assigned = self._consumer.assignment()
        offsets = {TopicPartition(*part): offset for part, offset in self._ready.items()
                   if TopicPartition(*part) in assigned}
        self._ready = {}
        if not offsets:
            return
        if await commit(self._consumer, offsets, self._name):
            for tp, offset in offsets.items():
                self._committed[(tp.topic, tp.partition)] = offset
        else:  # next time; unless a step comes first and works them out again
            self._ready = {(tp.topic, tp.partition): o for tp, o in offsets.items()}

    async def close(self) -> None:
        """Commit what the last complete step allowed; call after ``run`` ended."""
        with contextlib.suppress(Exception):
            await self._commit()


async def read_stream(kafka: AIOKafkaConsumer, topic: str, stage: Stage, *, name: str,
                      max_records: int) -> None:
    """Subscribe ``kafka`` to ``topic`` and feed ``stage`` until cancelled."""
    reader = StreamReader(kafka, stage, name=name, max_records=max_records)
    try:
        await start_consumer(kafka, topics=[topic], listener=reader)
        await reader.run()
    finally:
        await reader.close()
        await kafka.stop()
