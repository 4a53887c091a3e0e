"""One attempt of a batch: requests in order, replies read by the kind, one result."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

import pytest

from auditrelay.wire.client import Reply
from auditrelay.wire.kinds.base import Batch, FollowUp, Kind, Limits, Request, Target, Verdict
from auditrelay.wire.kinds.send import MAX_FOLLOW_UPS, Pacer, send_batch
from tests.support.clock import ManualClock, ManualSleep
from tests.unit.wire.kinds.test_base import events_body, target

pytestmark = pytest.mark.asyncio


class Scripted(Kind):
    """Two events per request; the reply's body says how to read it."""

    name: ClassVar[str] = "scripted"
    label: ClassVar[str] = "Scripted"
    limits: ClassVar[Limits] = Limits(max_events=2)

    def body(self, batch: Batch, target: Target, events: Sequence[int]) -> bytes:
        return batch.part(events)

    def read(self, reply: Reply, request: Request) -> Verdict:
        script = json.loads(reply.body)
        return Verdict(script["outcome"], script.get("words"),
                       retry_after_seconds=script.get("after"),
                       retry_items=tuple(script.get("retry", ())),
                       rejected_items=tuple((i, "bad") for i in script.get("rejected", ())))


class Poster:
    def __init__(self, *scripts: dict[str, object]) -> None:
        self.scripts = list(scripts)
        self.sent: list[list[str]] = []

    async def request(self, url: str, body: bytes,
                      headers: Mapping[str, str] | Callable[[], Mapping[str, str]]) -> Reply:
        self.sent.append([event["id"] for event in json.loads(body)])
        script = self.scripts.pop(0) if self.scripts else {"outcome": "delivered"}
        return Reply(200, None, None, json.dumps(script).encode(), 5)


def batch(n: int) -> Batch:
    return Batch(events_body(*([1] * n)), "msg_1", "ws1", n)


def ids(body: bytes) -> list[str]:
    return [event["id"] for event in json.loads(body)]


async def test_every_request_taken_delivers_the_batch() -> None:
    poster = Poster()
    result = await send_batch(poster, Scripted(), target(), batch(5), Pacer())
    assert poster.sent == [["aud_0", "aud_1"], ["aud_2", "aud_3"], ["aud_4"]]
    assert result.ok
    assert result.pending is None
    assert result.rejected is None
    assert result.latency_ms == 15


async def test_a_failure_ends_the_attempt_and_leaves_the_rest_pending() -> None:
    poster = Poster({"outcome": "delivered"}, {"outcome": "retry", "words": "busy", "after": 7})
    result = await send_batch(poster, Scripted(), target(), batch(5), Pacer())
    assert len(poster.sent) == 2
    assert not result.ok
    assert not result.gone
    assert result.error == "busy"
    assert result.retry_after_seconds == 7
    assert result.pending is not None
    assert result.pending.events == 3
    assert ids(result.pending.body) == ["aud_2", "aud_3", "aud_4"]


async def test_a_failure_of_the_first_request_leaves_the_whole_batch() -> None:
    result = await send_batch(Poster({"outcome": "retry"}), Scripted(), target(), batch(5),
                              Pacer())
    assert not result.ok
    assert result.pending is None


async def test_too_large_requests_are_halved_and_one_event_too_large_is_rejected() -> None:
    poster = Poster({"outcome": "split"}, {"outcome": "split", "words": "413 too large"})
    result = await send_batch(poster, Scripted(), target(), batch(2), Pacer())
    assert poster.sent == [["aud_0", "aud_1"], ["aud_0"], ["aud_1"]]
    assert result.ok
    assert result.rejected is not None
    assert ids(result.rejected.body) == ["aud_0"]
    assert result.rejected.detail == "413 too large"


async def test_items_to_retry_and_items_refused_become_parts() -> None:
    poster = Poster({"outcome": "delivered", "retry": [1], "rejected": [0],
                     "words": "1 of 2 busy"})
    result = await send_batch(poster, Scripted(), target(), batch(4), Pacer())
    assert len(poster.sent) == 2
    assert not result.ok
    assert result.pending is not None
    assert ids(result.pending.body) == ["aud_1"]
    assert result.rejected is not None
    assert ids(result.rejected.body) == ["aud_0"]
    assert result.error == "1 of 2 busy"


async def test_every_event_rejected_is_no_failure_but_all_rejected() -> None:
    result = await send_batch(Poster({"outcome": "rejected", "words": "invalid format"}),
                              Scripted(), target(), batch(2), Pacer())
    assert result.ok
    assert result.rejected is not None
    assert result.rejected.events == 2
    assert result.rejected.detail == "invalid format"


async def test_stop_disables_with_the_kinds_words() -> None:
    result = await send_batch(Poster({"outcome": "stop", "words": "channel archived"}),
                              Scripted(), target(), batch(2), Pacer())
    assert result.gone
    assert not result.ok
    assert result.error == "channel archived"


async def test_a_pace_makes_the_next_request_wait_for_its_turn() -> None:
    clock = ManualClock(100.0)
    sleep = ManualSleep(clock)
    waited = sleep.slept
    pacer = Pacer(clock=clock, sleep=sleep)
    await pacer.turn("dst_1", 1.0)
    await pacer.turn("dst_2", 1.0)
    assert waited == []
    clock.now += 0.25
    await pacer.turn("dst_1", 1.0)
    assert waited == [pytest.approx(0.75)]
    await pacer.turn("dst_1", 0)  # no pace, no wait
    assert len(waited) == 1


# -- follow-up requests (a reply that asks before its verdict holds) -------------------------


class Confirming(Kind):
    """Each request's reply asks for follow-ups; a follow-up reply's body is the verdict
    (or ``"again"``: ask again after ``state`` + 1 seconds)."""

    name: ClassVar[str] = "confirming"
    label: ClassVar[str] = "Confirming"

    def body(self, batch: Batch, target: Target, events: Sequence[int]) -> bytes:
        return batch.part(events)

    def read(self, reply: Reply, request: Request) -> Verdict:
        ask = Request("https://rx.example/ack", b"ask", {}, request.events)
        return Verdict("delivered", follow_up=FollowUp(ask, delay_seconds=0.5, state=0))

    def read_follow_up(self, reply: Reply, follow_up: FollowUp, request: Request) -> Verdict:
        said = reply.body.decode()
        if said == "again":
            return Verdict("delivered", follow_up=FollowUp(
                follow_up.request, delay_seconds=follow_up.state + 1.0,
                waited_seconds=follow_up.waited_seconds + follow_up.delay_seconds,
                state=follow_up.state + 1))
        return Verdict(said, "not confirmed" if said == "retry" else None)  # type: ignore[arg-type]


class FollowPoster:
    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.sent: list[tuple[str, bytes]] = []

    async def request(self, url: str, body: bytes,
                      headers: Mapping[str, str] | Callable[[], Mapping[str, str]]) -> Reply:
        self.sent.append((url, body))
        answer = self.answers.pop(0) if url.endswith("/ack") else "taken"
        return Reply(200, None, None, answer.encode(), 5)


def sleeping_pacer() -> tuple[Pacer, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    return Pacer(sleep=sleep), slept


async def test_a_follow_up_is_sent_after_its_delay_and_its_verdict_holds() -> None:
    poster = FollowPoster("again", "again", "delivered")
    pacer, slept = sleeping_pacer()
    result = await send_batch(poster, Confirming(), target(), batch(2), pacer)
    assert result.ok
    assert [url for url, _ in poster.sent] == ["https://rx.example/in"] + [
        "https://rx.example/ack"] * 3
    assert slept == [0.5, 1.0, 2.0]
    assert result.latency_ms == 20


async def test_a_follow_up_that_says_retry_leaves_the_request_pending() -> None:
    pacer, _ = sleeping_pacer()
    result = await send_batch(FollowPoster("retry"), Confirming(), target(), batch(2), pacer)
    assert not result.ok
    assert result.error == "not confirmed"
    assert result.pending is None  # the whole batch is sent again


async def test_follow_ups_are_capped_whatever_the_kind_does() -> None:
    poster = FollowPoster(*(["again"] * (MAX_FOLLOW_UPS + 5)))
    pacer, slept = sleeping_pacer()
    result = await send_batch(poster, Confirming(), target(), batch(1), pacer)
    assert not result.ok
    assert len(slept) == MAX_FOLLOW_UPS
    assert "no final answer" in (result.error or "")


async def test_a_kind_without_follow_ups_refuses_to_read_one() -> None:
    follow_up = FollowUp(Request("https://rx.example", b"", {}, (0,)))
    with pytest.raises(NotImplementedError, match="scripted asks for no follow-up"):
        Scripted().read_follow_up(Reply(200, None, None, b"", 1), follow_up, follow_up.request)
