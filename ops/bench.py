"""``auditrelay bench``: throughput measurements (docs/performance.md records the results).

``bench produce`` drives one :class:`~producer.AuditProducer` in this process
into a fresh topic of the configured broker, with events of a chosen size,
and reports events per second from the first ``emit`` to the end of ``flush``.
"""

from __future__ import annotations

import asyncio
import cProfile
import platform
import pstats
import time
import uuid
from pathlib import Path
from typing import Any

import click

from schemas.settings import Settings


@click.group()
def bench() -> None:
    """Throughput benchmarks against the local broker."""


def padded_metadata(builder: Any, actor: Any, size: int) -> dict[str, str]:
    """Metadata that makes an event exactly ``size`` bytes (when size allows)."""
    base = len(builder.build("ws_bench0000", "workspace", "updated", actor=actor,
                             metadata={"pad": ""}).value)
    return {"pad": "x" * max(0, size - base)}


@bench.command("produce")
@click.option("--events", default=300_000, show_default=True, type=click.IntRange(1, 5_000_000))
@click.option("--size", default=500, show_default=True, type=click.IntRange(300, 65_536),
              help="Serialised event size in bytes.")
@click.option("--workspaces", default=100, show_default=True, type=click.IntRange(1, 10_000),
              help="Distinct workspace ids (Kafka keys) cycled through.")
@click.option("--partitions", default=6, show_default=True, type=click.IntRange(1, 64))
@click.option("--api", type=click.Choice(["sync", "async"]), default="sync", show_default=True)
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write a cProfile of the run here and print its top lines.")
@click.pass_obj
def produce(settings: Settings, events: int, size: int, workspaces: int, partitions: int,
            api: str, profile_path: Path | None) -> None:
    """Events per second from one Python process into a fresh topic (deleted afterwards)."""
    from agents.kafka_admin import admin_client, create_topics, delete_topics
    from producer import Actor, ProducerConfig
    from schemas.builder import EventBuilder
    from schemas.topics import TopicSpec

    topic = f"bench.produce.{uuid.uuid4().hex[:12]}"
    admin = admin_client(settings.kafka_bootstrap)
    create_topics(admin, [TopicSpec(topic, partitions, {"retention.ms": "600000"})])
    try:
        config = ProducerConfig.from_settings(settings, topic=topic)
        actor = Actor(id="usr_bench", type="user")
        metadata = padded_metadata(EventBuilder(), actor, size)
        ids = [f"ws_bench{i:04d}" for i in range(workspaces)]
        build_rate = _build_only(config, actor, metadata, ids, min(events, 100_000))
        profiler = cProfile.Profile() if profile_path else None
        run = _run_sync if api == "sync" else _run_async
        if profiler:
            profiler.enable()
        elapsed = run(config, actor, metadata, ids, events)
        if profiler:
            profiler.disable()
    finally:
        delete_topics(admin, [topic])
    rate = events / elapsed
    click.echo(f"bench produce: {events} events of {size} bytes, {workspaces} workspaces, "
               f"{partitions} partitions, {api} API")
    click.echo(f"  {rate:,.0f} events/s ({rate * size / 1e6:.1f} MB/s) in {elapsed:.2f} s, "
               "emit to flushed")
    click.echo(f"  build + validate only: {build_rate:,.0f} events/s")
    click.echo(f"  Python {platform.python_version()}, {platform.machine()}, broker "
               f"{settings.kafka_bootstrap}")
    if profiler and profile_path:
        profiler.dump_stats(profile_path)
        pstats.Stats(str(profile_path)).sort_stats("tottime").print_stats(12)


def _build_only(config: Any, actor: Any, metadata: dict[str, str], ids: list[str],
                events: int) -> float:
    from schemas.builder import EventBuilder

    builder = EventBuilder(type_prefix=config.type_prefix,
                           source_base_url=config.source_base_url)
    count = len(ids)
    started = time.perf_counter()
    for i in range(events):
        builder.build(ids[i % count], "workspace", "updated", actor=actor, metadata=metadata)
    return events / (time.perf_counter() - started)


def _run_sync(config: Any, actor: Any, metadata: dict[str, str], ids: list[str],
              events: int) -> float:
    from producer import AuditProducer

    count = len(ids)
    with AuditProducer(config) as producer:
        emit = producer.emit
        started = time.perf_counter()
        for i in range(events):
            emit(ids[i % count], "workspace", "updated", actor=actor, metadata=metadata)
        producer.flush()
        elapsed = time.perf_counter() - started
        if producer.delivered != events:
            raise click.ClickException(f"only {producer.delivered} of {events} delivered")
    return elapsed


def _run_async(config: Any, actor: Any, metadata: dict[str, str], ids: list[str],
               events: int) -> float:
    from producer import AsyncAuditProducer

    async def main() -> float:
        count = len(ids)
        async with AsyncAuditProducer(config) as producer:
            started = time.perf_counter()
            futures = [await producer.enqueue(ids[i % count], "workspace", "updated",
                                              actor=actor, metadata=metadata)
                       for i in range(events)]
            await asyncio.gather(*futures)
            return time.perf_counter() - started

    return asyncio.run(main())
