"""The Faust application that every worker process runs.

``create_app`` is called once per process, at the entry point, with the settings
object built there; agent modules register themselves on the app it returns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import faust

from schemas.settings import WORKER_STAGES, Settings
from schemas.topics import TopicNames

#: An agent module's ``register(app, settings)``; called once per worker. What it
#: returns (e.g. the router's state, for tests) is ignored here.
Registrar = Callable[[faust.App, Settings], object]


def faust_broker_url(bootstrap: str) -> str:
    """Faust's broker URL for a ``host:port,host:port`` bootstrap list."""
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip())


def heartbeat_seconds(session_timeout: float) -> float:
    """How often a group member heartbeats: a third of the session timeout, at most 3 s."""
    return min(3.0, session_timeout / 3)


def create_app(settings: Settings, *, app_id: str | None = None,
               registrars: Sequence[Registrar] = ()) -> faust.App:
    app = faust.App(
        app_id or settings.topics.group_id("auditrelay"),
        broker=faust_broker_url(settings.kafka_bootstrap),
        store="memory://",
        datadir=str(Path(settings.var_dir) / "faust"),
        # Metrics have their own endpoint; Faust's web server would only add a port.
        web_enabled=False,
        # The leader topic is only needed by leader-only timers and crontabs; their
        # registrars enable it (agents.retention), and Faust then creates it itself.
        topic_disable_leader=True,
        topic_replication_factor=1,
        # Offsets are committed only for acked messages; a short interval keeps
        # redelivery after a crash small without committing per message.
        broker_commit_interval=1.0,
        # After a worker dies, its partitions move to the others once this passes.
        broker_session_timeout=settings.consumer_session_timeout_seconds,
        broker_heartbeat_interval=heartbeat_seconds(settings.consumer_session_timeout_seconds),
    )
    for register in registrars:
        register(app, settings)
    return app


def default_registrars(stages: Sequence[str] = WORKER_STAGES) -> list[Registrar]:
    """The agents of ``stages`` (``settings.worker_stages``), all of them by default."""
    from agents import archive, pipeline, retention, router

    by_stage: dict[str, Registrar] = {"router": router.register, "archive": archive.register,
                                      "retention": retention.register,
                                      "delivery": pipeline.register}
    return [by_stage[stage] for stage in ("router", "archive", "retention", "delivery")
            if stage in stages]


def worker_app_id(names: TopicNames, stages: Sequence[str]) -> str:
    """The Faust consumer group of a worker running ``stages``.

    A worker that routes uses the router's group. A worker that archives without
    routing gets a group of its own: both groups then read every event, so routing
    and archiving can run (and scale) in separate processes.
    """
    return names.group_id("auditrelay" if "router" in stages else "auditrelay-archive")
