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
from auditrelay.kafka.rounds import Round
from auditrelay.schemas.batches import MalformedInput
from auditrelay.schemas.settings import Settings
from auditrelay.schemas.topics import TopicNames
from auditrelay.tables.registry import DestinationRegistry, SharedFollower
from tests.unit.agents.test_routing import Rec, event, rec, registry_with
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
    plan = await router_for(registry, publisher).handle(
        [rec(b, i) for i, b in enumerate(built)] + [Rec(b"ws_a", b"junk", None, offset=999)])
    assert len(publisher.confirmed) == len(plan.records) == 5  # 2 + 2 batches, 1 dead letter
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
    calls = 0
    real = registry.matching

    def flaky(workspace: str, event_type: str) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return real(workspace, event_type)

    registry.matching = flaky  # type: ignore[method-assign]
    router = router_for(registry, publisher)
    await router.handle([rec(event())])
    assert len(publisher.confirmed) == 1
    assert "router round of 1 records failed" in caplog.text


@pytest.mark.asyncio
async def test_agent_body_routes_through_faust_test_context(tmp_path: Any) -> None:
    settings = Settings(var_dir=tmp_path, batch_window_seconds=0.05)
    app = create_app(settings, app_id="router-unit")
    publisher = FakePublisher()
    registry = registry_with(config("dst_a", "ws_a", event_types=("pro.atmos.auth.*",)))
    destinations = SharedFollower(app, settings.kafka_bootstrap, settings.topics.destinations)
    register(app, settings, destinations, registry=registry, publisher=publisher)
    agent = app.agents["router"]
    good, skipped = event(), event(category="billing", action="payment_failed")
    junk = Rec(b"ws_a", b"junk", [("ce_id", b"x")])
    batch = Round([rec(good), rec(skipped), junk])
    async with agent.test_context() as tested:
        await tested.put(batch, wait=False)
        # The reader waits for this before it commits the round's offsets.
        await asyncio.wait_for(batch.done, 10)
    consumer_thread = getattr(app.consumer, "_thread", None)
    if consumer_thread is not None:
        consumer_thread.thread_loop.close()
    sent, dead = sorted(publisher.confirmed, key=lambda r: r.topic)
    assert (sent.topic, sent.key) == ("audit.deliveries", b"dst_a")
    assert sent.value == b"[" + good.value + b"]"
    assert dead.topic == "audit.dlq"
    assert MalformedInput.from_headers(dead.headers).detail == "header ce_workspaceid is missing"
