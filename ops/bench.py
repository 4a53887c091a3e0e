"""``auditrelay bench``: throughput measurements (docs/performance.md records the results).

``bench produce`` drives one :class:`~producer.AuditProducer` in this process
into a fresh topic of the configured broker, with events of a chosen size,
and reports events per second from the first ``emit`` to the end of ``flush``.

``bench archive`` produces events into a fresh topic, then runs the archive agent
(``auditrelay.agents.archive``) in this process into a fresh SQLite file or PostgreSQL
database and reports archived rows per second.

``bench pipeline`` (``auditrelay.ops.bench_pipeline``) runs the whole pipeline: producer,
a real worker process and loopback receivers; events/s and latency end to end.

``bench http`` (``auditrelay.ops.bench_http``) compares the HTTP clients the delivery wire
could use: CPU per request as the number of requests in flight grows.

``bench create`` (``auditrelay.ops.bench_create``) creates destinations through a real API
process with concurrent HTTP clients: destinations/s, latency, and the outbox's drain time.

``bench destinations`` (``auditrelay.ops.bench_destinations``) creates thousands of
destinations through the API, then one worker delivers to them all: time to every
delivery, peak RSS, CPU, log size and failed attempts (issue #19).

``bench read`` (``auditrelay.ops.bench_read``) compares the Kafka clients that could read
``audit.events``: CPU per record of aiokafka and of confluent-kafka (issue #14).
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

from auditrelay.ops.bench_create import bench_database, create
from auditrelay.ops.bench_destinations import destinations
from auditrelay.ops.bench_http import http
from auditrelay.ops.bench_pipeline import pipeline
from auditrelay.ops.bench_read import read
from auditrelay.ops.bench_takeover import takeover
from auditrelay.schemas.settings import Settings

#: How often `bench archive` counts the rows (a run done between two counts has no rate).
_POLL = 0.2


@click.group()
def bench() -> None:
    """Throughput benchmarks against the local broker."""


bench.add_command(pipeline)  # ops/bench_pipeline.py: end to end through a real worker
bench.add_command(http)  # ops/bench_http.py: CPU per request of each HTTP client
bench.add_command(create)  # ops/bench_create.py: destinations/s through the API
bench.add_command(destinations)  # ops/bench_destinations.py: delivery at scale
bench.add_command(takeover)  # ops/bench_takeover.py: a worker killed, one started
bench.add_command(read)  # ops/bench_read.py: CPU per record of each Kafka client


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
    from auditrelay.kafka.admin import admin_client, create_topics, delete_topics
    from auditrelay.producer import Actor, ProducerConfig
    from auditrelay.schemas.builder import EventBuilder
    from auditrelay.schemas.topics import TopicSpec

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
        run = emit_sync if api == "sync" else _run_async
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
    from auditrelay.schemas.builder import EventBuilder

    builder = EventBuilder(type_prefix=config.type_prefix,
                           source_base_url=config.source_base_url)
    count = len(ids)
    started = time.perf_counter()
    for i in range(events):
        builder.build(ids[i % count], "workspace", "updated", actor=actor, metadata=metadata)
    return events / (time.perf_counter() - started)


def emit_sync(config: Any, actor: Any, metadata: dict[str, str], ids: list[str],
              events: int) -> float:
    """Emit ``events`` round-robin over ``ids`` and flush; seconds taken. Raises
    ``ClickException`` unless every event was delivered."""
    from auditrelay.producer import AuditProducer

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
    from auditrelay.producer import AsyncAuditProducer

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


# -- bench archive ------------------------------------------------------------------------------


@bench.command("archive")
@click.option("--events", default=100_000, show_default=True,
              type=click.IntRange(1, 5_000_000))
@click.option("--db", "db_kind", type=click.Choice(["sqlite", "postgresql"]), default="sqlite",
              show_default=True, help="A fresh SQLite file, or a fresh database on the local "
              "PostgreSQL (`auditrelay postgres up`), dropped afterwards.")
@click.option("--workspaces", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--partitions", default=6, show_default=True, type=click.IntRange(1, 64))
@click.pass_obj
def archive(settings: Settings, events: int, db_kind: str, workspaces: int,
            partitions: int) -> None:
    """Archive rows per second: Kafka through the archive agent into a fresh database."""
    from auditrelay.kafka.admin import admin_client, create_topics, delete_topics
    from auditrelay.schemas.topics import TopicSpec

    run_id = uuid.uuid4().hex[:12]
    prefix = f"bench.archive.{run_id}."
    admin = admin_client(settings.kafka_bootstrap)
    with bench_database(settings, db_kind, run_id, purpose="archive") as url:
        bench_settings = settings.model_copy(update={"topic_prefix": prefix,
                                                     "database_url": url})
        topic = bench_settings.topics.events
        create_topics(admin, [TopicSpec(topic, partitions, {"retention.ms": "600000"})])
        try:
            values = _produce_events(bench_settings, events, workspaces)
            insert_rate = _insert_only(url, values)
            total, after_first = asyncio.run(_archive_run(bench_settings, events, run_id))
        finally:
            delete_topics(admin, [topic])
    click.echo(f"bench archive: {events} events, {workspaces} workspaces, {partitions} "
               f"partitions, {db_kind}, batches of {settings.archive_batch_max_events}")
    # Rows are counted every _POLL s: a run done between two counts has no rate of its own.
    since_first = (f"{events / after_first:,.0f} rows/s from the first commit"
                   if after_first >= _POLL else "every row there at the first count")
    click.echo(f"  Kafka -> archive agent -> {db_kind}: {events / total:,.0f} rows/s "
               f"({total:.2f} s from worker start, {since_first})")
    click.echo(f"  parse + bulk insert only (no Kafka): {insert_rate:,.0f} rows/s")
    click.echo(f"  Python {platform.python_version()}, {platform.machine()}, broker "
               f"{settings.kafka_bootstrap}")



def _produce_events(settings: Settings, events: int, workspaces: int) -> list[Any]:
    """Emit ``events`` events into the events topic; returns them (key, value, headers)."""
    from auditrelay.producer import Actor, AuditProducer, ProducerConfig

    actor = Actor(id="usr_bench", type="user")
    values: list[Any] = []
    with AuditProducer(ProducerConfig.from_settings(settings)) as producer:
        for i in range(events):
            values.append(producer.emit(f"ws_bench{i % workspaces:04d}", "workspace",
                                        "updated", actor=actor))
        producer.flush()
    return values


def _insert_only(url: str, values: list[Any]) -> float:
    """Rows/s of parsing and bulk-inserting ``values`` alone; the rows are removed after."""
    from sqlalchemy import delete

    from auditrelay.agents.archive import insert_rows, rows_from_records
    from auditrelay.store.db import ArchivedEvent
    from auditrelay.store.engine import make_engine

    engine = make_engine(url)
    try:
        step = 2000
        started = time.perf_counter()
        for i in range(0, len(values), step):
            insert_rows(engine, rows_from_records(values[i:i + step])[0])
        elapsed = time.perf_counter() - started
        with engine.begin() as connection:
            connection.execute(delete(ArchivedEvent))
    finally:
        engine.dispose()
    return len(values) / elapsed


async def _archive_run(settings: Settings, events: int, run_id: str) -> tuple[float, float]:
    """Seconds until the archive agent committed every event: from start, from first row."""
    from sqlalchemy import func, select

    from auditrelay.agents import archive as archive_agent
    from auditrelay.agents.app import create_app
    from auditrelay.store.db import ArchivedEvent
    from auditrelay.store.engine import make_engine

    engine = make_engine(settings.database_url)
    app = create_app(settings, app_id=f"bench-archive-{run_id}",
                     registrars=[archive_agent.register])
    count_rows = select(func.count()).select_from(ArchivedEvent)
    started = time.perf_counter()
    first: float | None = None
    await app.start()
    try:
        rows = 0
        while rows < events:
            if time.perf_counter() - started > 600:
                raise click.ClickException(f"only {rows} of {events} rows after 600 s")
            await asyncio.sleep(_POLL)
            with engine.connect() as connection:
                rows = int(connection.scalar(count_rows) or 0)
            if rows and first is None:
                first = time.perf_counter()
        ended = time.perf_counter()
    finally:
        await app.stop()
        engine.dispose()
    return ended - started, ended - (first or started)
