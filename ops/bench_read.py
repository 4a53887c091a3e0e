"""``auditrelay bench read``: CPU per record of reading ``audit.events`` with each Kafka client.

Issue #14 asked whether the router and the archive should read ``audit.events`` with
confluent-kafka (librdkafka parses in C, in threads of its own) instead of aiokafka
(``getmany``, what they use). This measures exactly that part, nothing else: the
command produces ``--events`` canonical events (the producer library's, ``--size``
bytes, lz4 as services send them) into a fresh topic, then reads them all back with
each client in turn, ``--repeat`` times, each read in a fresh consumer group, touching
each record as the router does (key, value and its headers as a dict). It reports, per
read, records/s and the CPU per record of the whole process (librdkafka's threads
included) and of the thread that reads (the event loop's share in a worker). The
topic is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import platform
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from auditrelay.schemas.settings import Settings

__all__ = ["ReadFigures", "read"]

_CLIENTS = ("aiokafka", "confluent-kafka")
#: Records one read call asks for, as the router does (``agents.router.READ_EVENTS``).
_BATCH = 2000
_POLL_SECONDS = 0.5
#: A read that stops getting records for this long ends the run with an error.
_STALL_SECONDS = 30.0


@dataclass(frozen=True)
class ReadFigures:
    """One read of the whole topic."""

    client: str
    records: int
    seconds: float
    process_cpu: float
    thread_cpu: float

    def line(self) -> str:
        per = 1e6 / max(1, self.records)
        return (f"{self.client:16} {self.records / self.seconds:>10,.0f} records/s   "
                f"{self.process_cpu * per:5.2f} us CPU/record (process), "
                f"{self.thread_cpu * per:5.2f} (reading thread)")


def _touch(key: bytes | None, value: bytes | None, headers: Any) -> int:
    """What the router does with each record before routing: its key, value and headers."""
    found = dict(headers) if headers else {}
    return len(found) + (len(value) if value else 0) + (len(key) if key else 0)


class _Clock:
    """Wall time and CPU (process, this thread) from the first record on."""

    def __init__(self) -> None:
        self.started = False
        self._wall = self._process = self._thread = 0.0

    def start(self) -> None:
        self.started = True
        self._wall, self._process = time.perf_counter(), time.process_time()
        self._thread = time.thread_time()

    def figures(self, client: str, records: int) -> ReadFigures:
        return ReadFigures(client, records, time.perf_counter() - self._wall,
                           time.process_time() - self._process,
                           time.thread_time() - self._thread)


def _read_aiokafka(bootstrap: str, topic: str, expected: int) -> ReadFigures:
    from aiokafka import AIOKafkaConsumer

    async def main() -> ReadFigures:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=f"bench.read.{uuid.uuid4().hex}",
            auto_offset_reset="earliest", enable_auto_commit=False,
            max_partition_fetch_bytes=4 * 1024 * 1024)
        await consumer.start()
        try:
            clock, seen, last = _Clock(), 0, time.monotonic()
            while seen < expected:
                got = await consumer.getmany(timeout_ms=round(_POLL_SECONDS * 1000),
                                             max_records=_BATCH)
                if got and not clock.started:  # the group's join is not the client's cost
                    clock.start()
                for records in got.values():
                    for record in records:
                        _touch(record.key, record.value, record.headers)
                    seen += len(records)
                last = _stalled(got, last, seen, expected)
            return clock.figures("aiokafka", seen)
        finally:
            await consumer.stop()

    return asyncio.run(main())


def _read_confluent(bootstrap: str, topic: str, expected: int) -> ReadFigures:
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap,
                         "group.id": f"bench.read.{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         # As the aiokafka reader (auditrelay.kafka.rounds): 4 MiB a partition.
                         "max.partition.fetch.bytes": 4 * 1024 * 1024})
    consumer.subscribe([topic])
    try:
        clock, seen, last = _Clock(), 0, time.monotonic()
        while seen < expected:
            got = consumer.consume(_BATCH, _POLL_SECONDS)
            if got and not clock.started:
                clock.start()
            for message in got:
                if message.error() is None:
                    _touch(message.key(), message.value(), message.headers())
                    seen += 1
            last = _stalled(got, last, seen, expected)
        return clock.figures("confluent-kafka", seen)
    finally:
        consumer.close()


def _stalled(got: Any, last: float, seen: int, expected: int) -> float:
    """When records last came; raises once none came for ``_STALL_SECONDS``."""
    now = time.monotonic()
    if got:
        return now
    if now - last > _STALL_SECONDS:
        raise click.ClickException(f"read {seen} of {expected} records, then none for "
                                   f"{_STALL_SECONDS:.0f} s")
    return last


_READERS: dict[str, Callable[[str, str, int], ReadFigures]] = {
    "aiokafka": _read_aiokafka, "confluent-kafka": _read_confluent}


def _fill(settings: Settings, topic: str, events: int, size: int, workspaces: int) -> None:
    from auditrelay.ops.bench import emit_sync, padded_metadata
    from auditrelay.producer import Actor, ProducerConfig
    from auditrelay.schemas.builder import EventBuilder

    actor = Actor(id="usr_bench", type="user")
    emit_sync(ProducerConfig.from_settings(settings, topic=topic), actor,
              padded_metadata(EventBuilder(), actor, size),
              [f"ws_bench{i:04d}" for i in range(workspaces)], events)


@click.command("read")
@click.option("--events", default=200_000, show_default=True,
              type=click.IntRange(1, 5_000_000))
@click.option("--size", default=500, show_default=True, type=click.IntRange(300, 65_536),
              help="Serialised event size in bytes.")
@click.option("--partitions", default=6, show_default=True, type=click.IntRange(1, 64))
@click.option("--repeat", default=2, show_default=True, type=click.IntRange(1, 10),
              help="Reads per client, alternating.")
@click.option("--client", "clients", type=click.Choice([*_CLIENTS, "all"]), default="all",
              show_default=True)
@click.pass_obj
def read(settings: Settings, events: int, size: int, partitions: int, repeat: int,
         clients: str) -> None:
    """CPU per record of reading a topic of events with aiokafka and with confluent-kafka."""
    from auditrelay.kafka.admin import admin_client, create_topics, delete_topics
    from auditrelay.schemas.topics import TopicSpec

    chosen = list(_CLIENTS) if clients == "all" else [clients]
    topic = f"bench.read.{uuid.uuid4().hex[:12]}"
    admin = admin_client(settings.kafka_bootstrap)
    create_topics(admin, [TopicSpec(topic, partitions, {"retention.ms": "600000"})])
    click.echo(f"bench read: {events} events of {size} bytes, {partitions} partitions, "
               f"read {repeat} time(s) per client")
    try:
        _fill(settings, topic, events, size, workspaces=100)
        for _ in range(repeat):
            for client in chosen:
                click.echo("  " + _READERS[client](settings.kafka_bootstrap, topic,
                                                   events).line())
    finally:
        delete_topics(admin, [topic])
    click.echo(f"  topic {topic} deleted")
    click.echo(f"  Python {platform.python_version()}, {platform.machine()}, broker "
               f"{settings.kafka_bootstrap}")
