"""The worker's composition root: the Faust application every worker process runs.

``create_app`` is called once per process, at the entry point, with the settings
object built there; each stage module's ``register(app, settings, destinations)``
adds its agents, timers and services to the app it returns. ``destinations`` is
what the stages share: the app's one follower of ``audit.destinations``
(``auditrelay.tables.registry.SharedFollower``), made here and started only if a
stage asks for it (the router and delivery do). ``default_registrars`` is the
one place that imports the stages (``router``, ``archive``, ``retention``, and
``pipeline`` for delivery and retry): a stage not named there does not run.

What Faust does here: it hosts the agents and their services in one event loop,
runs the worker's lifecycle (start, signals, graceful stop), and elects one
leader through its consumer group for the leader-only crontab (retention).
What it does not: it does not read ``audit.events`` record by record (the router
and the archive read it in rounds, ``auditrelay.kafka.rounds``, and their Faust
agents handle whole rounds), nor consume the delivery topics (delivery and retry
run aiokafka consumers with a lane per destination, ``auditrelay.kafka.keyed``),
and it keeps no tables (state from compacted topics is in ``auditrelay.tables``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import faust

from auditrelay.kafka.clients import KeyHashPartitioner, heartbeat_seconds
from auditrelay.schemas.settings import WORKER_STAGES, Settings
from auditrelay.tables.registry import SharedFollower

#: An agent module's ``register(app, settings, destinations)``; called once per worker.
#: What it returns (e.g. the router's state, for tests) is ignored here.
Registrar = Callable[[faust.App, Settings, SharedFollower], object]


#: Bytes per partition the Faust producer (the router's) gathers into one batch. aiokafka
#: keeps one open batch per partition and sends one request per broker at a time: once a
#: partition's batch is full, ``send`` waits until that request is answered. With Faust's
#: 16 KiB (some 18 delivery batches), a round of 500 records took several round trips,
#: each waiting its turn on a busy event loop: the router fell behind (issue #19).
ROUTER_BATCH_BYTES: Final = 512 * 1024


def faust_broker_url(bootstrap: str) -> str:
    """Faust's broker URL for a ``host:port,host:port`` bootstrap list."""
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip())


def create_app(settings: Settings, *, app_id: str | None = None,
               registrars: Sequence[Registrar] = (), replication_factor: int = 1) -> faust.App:
    """``replication_factor``: of the topic Faust creates (its leader topic); the worker
    passes what the settings resolve to on the cluster (3 on three or more brokers)."""
    app = faust.App(
        app_id or settings.topics.app_group,
        broker=faust_broker_url(settings.kafka_bootstrap),
        store="memory://",
        datadir=str(Path(settings.var_dir) / "faust"),
        # Metrics have their own endpoint; Faust's web server would only add a port.
        web_enabled=False,
        # The stages read their topics with consumers of their own (auditrelay.kafka.rounds,
        # auditrelay.agents.pipeline); Faust's consumer group only follows the leader topic
        # (which Faust creates), electing the worker that runs leader-only crontabs.
        topic_disable_leader=False,
        topic_replication_factor=replication_factor,
        # After a worker dies, its partitions move to the others once this passes.
        broker_session_timeout=settings.consumer_session_timeout_seconds,
        broker_heartbeat_interval=heartbeat_seconds(settings.consumer_session_timeout_seconds),
        # The router's producer (ROUTER_BATCH_BYTES says why).
        producer_max_batch_size=ROUTER_BATCH_BYTES,
        # acks=all (Faust's default, -1), without idempotence: aiokafka's idempotent
        # producer stops for good once the broker refuses its sequence, which an outage
        # longer than the request timeout can cause (seen in CI), and Faust would not
        # replace it. A batch written twice after a lost answer keeps its batch id.
        producer_acks=-1,
        # Partitions of audit.deliveries by destination id, as aiokafka's default does.
        producer_partitioner=KeyHashPartitioner(),
    )
    destinations = SharedFollower(app, settings.kafka_bootstrap, settings.topics.destinations)
    for register in registrars:
        register(app, settings, destinations)
    return app


def default_registrars(stages: Sequence[str] = WORKER_STAGES) -> list[Registrar]:
    """The agents of ``stages`` (``settings.worker_stages``), all of them by default."""
    # Imported on call: a process that builds the app with registrars of its own
    # (tests, benchmarks) does not import every stage and what the stages import.
    from auditrelay.agents import archive, pipeline, retention, router

    by_stage: dict[str, Registrar] = {"router": router.register, "archive": archive.register,
                                      "retention": retention.register,
                                      "delivery": pipeline.register}
    return [by_stage[stage] for stage in ("router", "archive", "retention", "delivery")
            if stage in stages]
