"""The ``count_*`` functions update the named series (checked as deltas: the registry
is per process and shared by every test)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable

import pytest

from auditrelay.observability import metrics
from auditrelay.ops import runner
from auditrelay.schemas.batches import REASON_DELETED, REASON_EXHAUSTED, BatchMeta
from tests.support.polling import eventually

META = BatchMeta("msg_1", "dst_unit_metrics", "ws_1", 7, 1_000_000)


def reader(name: str, **labels: str) -> Callable[[], float]:
    def read() -> float:
        return metrics.WORKER_REGISTRY.get_sample_value(name, labels) or 0.0
    return read


def test_a_round_counts_events_by_outcome() -> None:
    routed = reader("auditrelay_events_in_total", outcome="routed")
    unmatched = reader("auditrelay_events_in_total", outcome="unmatched")
    malformed = reader("auditrelay_events_in_total", outcome="malformed")
    before = routed(), unmatched(), malformed()
    metrics.count_round(routed=5, unmatched=2, malformed=0)
    metrics.count_round(routed=1, unmatched=0, malformed=3)
    assert (routed() - before[0], unmatched() - before[1], malformed() - before[2]) == (6, 2, 3)


def test_produced_batches_and_dead_letters() -> None:
    batches = reader("auditrelay_batches_out_total")
    events = reader("auditrelay_batched_events_total")
    malformed = reader("auditrelay_dead_lettered_total", reason="malformed_event")
    deleted = reader("auditrelay_dead_lettered_total", reason=REASON_DELETED)
    before = batches(), events(), malformed(), deleted()
    metrics.count_produced(META)
    metrics.count_produced(META)
    metrics.count_produced(None)
    metrics.count_produced(META.evolve(reason=REASON_DELETED))
    assert (batches() - before[0], events() - before[1], malformed() - before[2],
            deleted() - before[3]) == (2, 14, 1, 1)


def test_decisions_count_by_outcome_and_time_deliveries() -> None:
    delivered = reader("auditrelay_deliveries_total", destination=META.destination_id,
                       outcome="delivered")
    retried = reader("auditrelay_deliveries_total", destination=META.destination_id,
                     outcome="retry")
    dead = reader("auditrelay_deliveries_total", destination=META.destination_id,
                  outcome="dead_letter")
    exhausted = reader("auditrelay_dead_lettered_total", reason=REASON_EXHAUSTED)
    latency_count = reader("auditrelay_delivery_latency_seconds_count")
    latency_sum = reader("auditrelay_delivery_latency_seconds_sum")
    within_5s = reader("auditrelay_delivery_latency_seconds_bucket", le="5.0")
    requests = reader("auditrelay_delivery_request_seconds_count")
    before = [f() for f in (delivered, retried, dead, exhausted, latency_count, latency_sum,
                            within_5s, requests)]
    metrics.count_decision("delivered", META, 0.2, now=1003.0)  # 3 s after the first event
    metrics.count_decision("retry", META, 0.1, now=1010.0)
    metrics.count_decision("dead_letter", META.evolve(reason=REASON_EXHAUSTED), None, 1020.0)
    after = [f() for f in (delivered, retried, dead, exhausted, latency_count, latency_sum,
                           within_5s, requests)]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 1, 1, 3.0, 1, 2]


def test_api_requests_by_template_with_unknown_methods_folded() -> None:
    ok = reader("auditrelay_api_requests_total", method="GET", route="/x/{id}", status="200")
    other = reader("auditrelay_api_requests_total", method="OTHER", route="/x/{id}",
                   status="405")
    before = ok(), other()
    metrics.count_api_request("GET", "/x/{id}", 200, 0.01)
    metrics.count_api_request("BREW", "/x/{id}", 405, 0.01)
    assert metrics.API_REGISTRY.get_sample_value("auditrelay_api_requests_total", {
        "method": "GET", "route": "/x/{id}", "status": "200"}) == before[0] + 1
    assert metrics.API_REGISTRY.get_sample_value("auditrelay_api_requests_total", {
        "method": "OTHER", "route": "/x/{id}", "status": "405"}) == before[1] + 1
    # The worker's registry does not carry the API's series, nor the other way round.
    assert ok() == 0
    assert metrics.API_REGISTRY.get_sample_value("auditrelay_delivery_latency_seconds_count") \
        is None


@pytest.mark.asyncio
async def test_the_heartbeat_moves_while_its_loop_turns_and_stops_when_cancelled() -> None:
    beat = reader("auditrelay_worker_heartbeat_timestamp_seconds")
    metrics.WORKER_HEARTBEAT.set(0)
    started = time.time()
    task = asyncio.create_task(metrics.heartbeat(interval=0.01))
    try:
        await eventually(lambda: beat() >= started, 5, "no first beat")
        first = beat()
        await eventually(lambda: beat() > first, 5, "no second beat")
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.done()
    assert started <= beat() <= time.time()


def test_the_worker_heartbeat_is_a_faust_task_that_takes_no_app() -> None:
    # Faust hands the app to a task that takes a parameter: heartbeat's interval.
    assert not inspect.signature(runner._beat).parameters


def test_counters_have_no_created_series_and_the_router_names_no_destination() -> None:
    # Each would be a series per destination more on every scrape (docs/metrics.md).
    metrics.count_produced(META)
    names = {sample.name for family in metrics.WORKER_REGISTRY.collect()
             for sample in family.samples}
    assert not [name for name in names if name.endswith("_created")]
    families = {family.name: family for family in metrics.WORKER_REGISTRY.collect()}
    for name in ("auditrelay_batches_out", "auditrelay_batched_events"):
        assert all(not sample.labels for sample in families[name].samples), name
