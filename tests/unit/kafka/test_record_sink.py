"""RecordSink puts a new producer in place of one the broker's sequence check finished."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, OutOfOrderSequenceNumber

from auditrelay.kafka.clients import RecordSink
from auditrelay.schemas.errors import ProduceError

pytestmark = pytest.mark.asyncio


class FakeProducer:
    """What RecordSink uses of an AIOKafkaProducer: broken ones fail every send."""

    def __init__(self, number: int, *, broken: bool = False, starts: bool = True) -> None:
        self.number = number
        self.broken = broken
        self.starts = starts
        self.stopped = False
        self.sent: list[str] = []

    async def start(self) -> None:
        if not self.starts:
            raise KafkaConnectionError("broker away")

    async def stop(self) -> None:
        self.stopped = True

    async def send_and_wait(self, topic: str, **_: Any) -> Any:
        if self.broken:
            raise OutOfOrderSequenceNumber()
        self.sent.append(topic)
        return type("Meta", (), {"offset": len(self.sent) - 1})()

    async def send(self, topic: str, **_: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.broken:
            future.set_exception(OutOfOrderSequenceNumber())
        else:
            self.sent.append(topic)
            future.set_result(None)
        return future


def sink_over(producers: list[FakeProducer]) -> tuple[RecordSink, list[FakeProducer]]:
    made: list[FakeProducer] = []

    def new_producer() -> Any:
        made.append(producers[len(made)])
        return made[-1]

    return RecordSink("127.0.0.1:1", new_producer=new_producer), made


async def test_a_refused_sequence_fails_the_send_and_the_next_goes_through_a_new_producer(
        ) -> None:
    sink, made = sink_over([FakeProducer(1, broken=True), FakeProducer(2)])
    await sink.start()
    with pytest.raises(ProduceError, match="OutOfOrderSequenceNumber"):
        await sink.send_to("t", 0, b"k", b"v")
    assert sink.renewals == 1
    assert made[0].stopped
    assert await sink.send_to("t", 0, b"k", b"v") == 0
    assert made[1].sent == ["t"]


async def test_a_new_producer_that_cannot_start_leaves_the_old_one_for_the_next_try() -> None:
    sink, made = sink_over([FakeProducer(1, broken=True), FakeProducer(2, starts=False),
                            FakeProducer(3)])
    await sink.start()
    for _ in range(2):
        with pytest.raises(ProduceError):
            await sink.send("t", b"k", b"v")
    assert sink.renewals == 1
    assert [p.number for p in made] == [1, 2, 3]
    assert made[1].stopped
    assert made[0].stopped
    await sink.send("t", b"k", b"v")
    assert made[2].sent == ["t"]


async def test_a_queued_record_refused_so_renews_the_producer_too() -> None:
    sink, made = sink_over([FakeProducer(1, broken=True), FakeProducer(2)])
    await sink.start()
    future = await sink.enqueue("t", b"k", b"v")
    with pytest.raises(OutOfOrderSequenceNumber):
        await future
    for _ in range(100):  # the renewal runs as a task of its own
        if sink.renewals:
            break
        await asyncio.sleep(0)
    assert sink.renewals == 1
    assert await (await sink.enqueue("t", b"k", b"v")) is None
    assert made[1].sent == ["t"]
    await sink.stop()
    assert made[1].stopped
