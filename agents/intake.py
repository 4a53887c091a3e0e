"""Intake monitor: consumes ``audit.events``, produces nothing but a throughput log.

Counts what producers write, per event type, from the ``ce_type`` header alone
(no JSON parsing), and logs a summary every interval, so an operator sees that
events flow. Faust hands each record to every agent subscribed to its topic and
commits an offset only once all of them acked it, so counting here never takes
an event away from another agent; with N workers, each counts its partitions.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping

import faust

from schemas.settings import Settings

log = logging.getLogger(__name__)

_UNTYPED = "(no ce_type header)"
_INTERVAL_SECONDS = 10.0


def event_type(headers: Mapping[str, bytes] | Iterable[tuple[str, bytes]] | None) -> str:
    """The ``ce_type`` header of a record, decoded; a placeholder when absent."""
    if headers is None:
        return _UNTYPED
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for key, value in pairs:
        if key == "ce_type" and value:
            return value.decode("utf-8", errors="replace")
    return _UNTYPED


def summary(counts: Counter[str], seconds: float, top: int = 5) -> str:
    """One log line: total, rate and the busiest types of an interval."""
    total = sum(counts.values())
    busiest = ", ".join(f"{name}={n}" for name, n in counts.most_common(top))
    return f"intake: {total} events in {seconds:.0f} s ({total / seconds:.1f}/s); {busiest}"


def register(app: faust.App, settings: Settings) -> None:
    topic = app.topic(settings.topics.events, key_serializer="raw", value_serializer="raw")
    counts: Counter[str] = Counter()

    @app.agent(topic, name="intake")
    async def intake(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            counts[event_type(event.message.headers)] += 1

    @app.timer(_INTERVAL_SECONDS)
    async def report() -> None:
        if counts:
            log.info(summary(counts, _INTERVAL_SECONDS))
            counts.clear()
