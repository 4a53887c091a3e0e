"""auditrelay.agents.router without a broker: publishing until confirmed, the agent body."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Iterable
from typing import Any

import pytest

from auditrelay.agents.app import create_app
from auditrelay.agents.router import Router, register
from auditrelay.agents.routing import OutRecord
from auditrelay.schemas.settings import Settings
from auditrelay.schemas.topics import TopicNames
from auditrelay.tables.registry import DestinationRegistry, SharedFollower
from tests.unit.agents.test_routing import Rec, event, failing_on_call, rec, registry_with
from tests.unit.tables.test_registry import config

TOPICS = TopicNames("audit.")


class BrokerDown(Exception):
    pass


class FakePublisher:
    """Scripted producer: per send, an outcome ("ok", "fail", "hang" or an exception to raise)."""

    def __init__(self, outcomes: Iterable[Any] = ()) -> None:
        self.outcomes = list(outcomes)
        self.sent: list[OutRecord] = []
        self.confirmed: list[OutRecord] = []
        self.hanging: list[asyncio.Future[Any]] = []

    async def send(self, record: OutRecord) -> Awaitable[Any]:
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        if isinstance(outcome, Exception):
            raise outcome
        self.sent.append(record)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if outcome == "ok":
            future.set_result(None)
            self.confirmed.append(record)
        elif outcome == "fail":
            future.set_exception(BrokerDown("no leader"))
        else:
            self.hanging.append(future)
        return future


def router_for(registry: DestinationRegistry, publisher: FakePublisher) -> Router:
    return Router(registry, TOPICS, publisher, backoff_seconds=(0.001, 0.004),
                  schedule_timeout=0.5)


def ids_in(records: list[OutRecord]) -> list[str]:
    return [e["id"] for r in records for e in json.loads(r.value or b"[]")]


@pytest.mark.asyncio
async def test_everything_is_confirmed_before_handle_returns() -> None:
    publisher = FakePublisher()
    registry = registry_with(config("dst_a", "ws_a"), config("dst_b", "ws_a"))
    built = [event() for _ in range(150)]
    await router_for(registry, publisher).handle(
        [rec(b, i) for i, b in enumerate(built)] + [Rec(b"ws_a", b"junk", None, offset=999)])
    assert len(publisher.confirmed) == 5  # 2 + 2 batches, 1 dead letter
    assert [r.topic for r in publisher.confirmed].count("audit.dlq") == 1
    assert ids_in([r for r in publisher.confirmed if r.key == b"dst_a"]) == \
        [b.id for b in built]
    assert {r.topic for r in publisher.confirmed} == {"audit.deliveries", "audit.dlq"}


@pytest.mark.asyncio
async def test_failed_sends_are_retried_and_only_they_are_resent() -> None:
    publisher = FakePublisher(["ok", "fail", "ok", BrokerDown("queue"), "ok", "ok"])
    registry = registry_with(config("dst_a", "ws_a"))
    router = router_for(registry, publisher)
    built = [event() for _ in range(400)]
    await router.handle([rec(b, i) for i, b in enumerate(built)])
    # 4 batches; the second failed to confirm, the third failed to be handed over.
    assert len(publisher.confirmed) == 4
    assert len(publisher.sent) == 5  # only the failed one was sent twice
    assert sorted(ids_in(publisher.confirmed)) == sorted(b.id for b in built)
    assert router.stats.retries >= 1


@pytest.mark.asyncio
async def test_a_long_outage_is_waited_out() -> None:
    publisher = FakePublisher([BrokerDown("down")] * 6 + ["fail"] * 3)
    registry = registry_with(config("dst_a", "ws_a"))
    router = router_for(registry, publisher)
    built = [event() for _ in range(3)]
    await router.handle([rec(b, i) for i, b in enumerate(built)])
    assert ids_in(publisher.confirmed) == [b.id for b in built]
    assert router.stats.retries >= 9


@pytest.mark.asyncio
async def test_a_bug_in_a_round_is_retried_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    publisher = FakePublisher()
    registry = registry_with(config("dst_a", "ws_a"))
    registry.matching = failing_on_call(registry.matching, 1)  # type: ignore[method-assign,assignment]
    router = router_for(registry, publisher)
    await router.handle([rec(event())])
    assert len(publisher.confirmed) == 1
    assert "router step of 1 records failed" in caplog.text


#: The Kafka timestamp of ``Rec``s, in epoch seconds, and a moment just after it.
STAMP = 1_764_000_000.5
NOW = STAMP + 0.1


@pytest.mark.asyncio
async def test_a_full_batch_leaves_at_once_a_partial_one_at_the_window() -> None:
    publisher = FakePublisher()
    registry = registry_with(config("dst_a", "ws_a"))
    router = Router(registry, TOPICS, publisher, window=1.0)
    built = [event() for _ in range(150)]
    await router.step([rec(b, i) for i, b in enumerate(built)], NOW)
    # The first 100 are out and confirmed; the other 50 wait, and hold the input there.
    assert ids_in(publisher.confirmed) == [b.id for b in built[:100]]
    assert router.held() == {("audit.events", 0): 100}
    assert router.next_due() == STAMP + 1.0  # the window after the oldest event's emit
    await router.step([], STAMP + 0.99)
    assert len(publisher.confirmed) == 1
    await router.step([], STAMP + 1.0)
    assert ids_in(publisher.confirmed) == [b.id for b in built]
    assert router.held() == {}
    assert router.next_due() is None
    assert router.stats.events == 150
    assert router.stats.batches == 2


@pytest.mark.asyncio
async def test_reads_fill_the_same_open_batch_in_order() -> None:
    publisher = FakePublisher()
    registry = registry_with(config("dst_a", "ws_a"), config("dst_b", "ws_a"))
    router = Router(registry, TOPICS, publisher, window=1.0)
    built = [event() for _ in range(250)]
    for first in range(0, 250, 30):  # reads of 30 records
        await router.step([rec(b, first + i) for i, b in enumerate(built[first:first + 30])],
                          NOW)
    for dest in (b"dst_a", b"dst_b"):
        assert ids_in([r for r in publisher.confirmed if r.key == dest]) == \
            [b.id for b in built[:200]]
    assert router.held() == {("audit.events", 0): 200}
    await router.flush()
    for dest in (b"dst_a", b"dst_b"):
        assert ids_in([r for r in publisher.confirmed if r.key == dest]) == \
            [b.id for b in built]
    assert router.held() == {}


@pytest.mark.asyncio
async def test_a_step_that_cannot_publish_does_not_return() -> None:
    publisher = FakePublisher(["hang"])
    registry = registry_with(config("dst_a", "ws_a"))
    router = router_for(registry, publisher)
    built = [event() for _ in range(100)]
    step = asyncio.ensure_future(router.step([rec(b, i) for i, b in enumerate(built)], NOW))
    await asyncio.sleep(0.05)
    assert not step.done()  # the reader cannot commit while the batch is unconfirmed
    publisher.hanging[0].set_result(None)
    await asyncio.wait_for(step, 5)
    assert router.held() == {}


def test_register_adds_the_router_as_a_task_with_the_settings(tmp_path: Any) -> None:
    settings = Settings(var_dir=tmp_path, batch_window_seconds=0.25, batch_max_events=7)
    app = create_app(settings, app_id="router-unit")
    destinations = SharedFollower(app, settings.kafka_bootstrap, settings.topics.destinations)
    router = register(app, settings, destinations, registry=registry_with(),
                      publisher=FakePublisher())
    assert "router" not in app.agents  # no Faust stream acks anything for the router
    assert router.max_events == 7
    assert router.buffer.window == 0.25
