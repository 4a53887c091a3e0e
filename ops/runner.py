"""Foreground processes: ``auditrelay worker`` and the all-in-one ``auditrelay run``.

``run`` supervises child processes (the worker and the API; the demo later)
in the foreground: Ctrl-C or SIGTERM stops them all, and the broker too when
this run started it.
"""

from __future__ import annotations

import gc
import ipaddress
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

import click
from pydantic import SecretStr

from auditrelay.schemas.settings import BACKGROUND_STAGES, Settings

_STOP_GRACE_SECONDS = 15.0
#: The cyclic collector's thresholds in a worker (CPython's: 700, 10, 10). Every
#: parsed event is a few dicts, so the default ran a young collection every few
#: batches, each walking what the last ones left; 20 000 made the worker about 10 %
#: faster at the same peak RSS (docs/performance.md, 2026-12-02).
_GC_THRESHOLDS = (20_000, 20, 100)


async def _beat() -> None:
    """The worker's heartbeat as a Faust app task: no parameter, so Faust passes no app."""
    from auditrelay.observability.metrics import heartbeat

    await heartbeat()


def run_worker(settings: Settings) -> None:
    """Run the worker's stages (``settings.worker_stages``) until it is signalled."""
    if not {"router", "archive"} & set(settings.worker_stages):
        _run_delivery_only(settings)
        return
    from faust.worker import Worker as FaustWorker

    from auditrelay.agents.app import create_app, default_registrars
    from auditrelay.observability.collector import serve_worker_metrics
    from auditrelay.observability.logs import install_log_filters, logging_config

    class Worker(FaustWorker):  # the log lines name the class: keep "Worker"
        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            # No start-up spinner: Faust's lowers the root logger to DEBUG for it, for
            # good, and every library's debug record was then built and filtered
            # (30 % of the worker's CPU at 20 000 events/s).
            self.spinner = None
            super().on_setup_root_logger(logger, level)
            install_log_filters(logger)
            _yield_cpu(settings)  # here, once logging is set up, before any stage starts

    app = create_app(settings, registrars=default_registrars(settings.worker_stages),
                     replication_factor=_leader_replication(settings))
    worker = Worker(app, loglevel=settings.log_level.lower(), quiet=True,
                    logging_config=logging_config(settings))
    app.task(_beat)
    stop_metrics = serve_worker_metrics(settings)
    _tune_gc()
    try:
        worker.execute_from_commandline()
    finally:
        stop_metrics()


def background_niceness(settings: Settings) -> int:
    """How much this worker lowers its CPU priority: ``worker_background_nice`` when all
    its stages are background stages (no event waits for them on its way to a
    receiver), else nothing."""
    if set(settings.worker_stages) <= BACKGROUND_STAGES:
        return settings.worker_background_nice
    return 0


def _yield_cpu(settings: Settings) -> None:
    """Lower the priority of a background worker: on a host it shares with the router
    and delivery (two cores in docs/performance.md), the archive then takes the CPU
    they leave and catches up after a burst, instead of slowing every delivery's
    turn; it still gets its share when they are busy all the time."""
    niceness = background_niceness(settings)
    if not niceness:
        return
    log = logging.getLogger(__name__)
    try:
        os.nice(niceness)
    except OSError as exc:  # a sandbox that forbids it: run as started
        log.warning("cannot lower the worker's CPU priority (%s); it runs as started", exc)
        return
    log.info("background stages only (%s): niceness raised by %d "
             "(AUDITRELAY_WORKER_BACKGROUND_NICE)", ",".join(settings.worker_stages), niceness)


def _tune_gc() -> None:
    """Fewer collections for a long-running worker: what start-up built (modules, the
    app, its settings) lives as long as the process, so it is moved out of the
    collector's sight, and young collections come less often (``_GC_THRESHOLDS``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)


def _leader_replication(settings: Settings) -> int:
    """The replication factor of Faust's leader topic: the settings' resolved on the
    cluster, as ``topics ensure`` does; 1 (with a warning) when no broker answers yet,
    which matters only if the topic does not exist either."""
    from auditrelay.kafka.admin import admin_client, cluster_replication
    from auditrelay.schemas.errors import KafkaError

    try:
        replication, _ = cluster_replication(admin_client(settings.kafka_bootstrap),
                                             settings.topic_replication_factor,
                                             settings.topic_min_insync_replicas)
    except KafkaError as exc:
        logging.getLogger(__name__).warning(
            "cannot resolve the topic replication (%s); Faust's leader topic, if it must be "
            "created, gets one replica", exc)
        return 1
    return replication.factor


def _run_delivery_only(settings: Settings) -> None:
    """Delivery and retry without Faust (they are aiokafka consumers): a worker that
    scales delivery alone needs no Faust app, which could not start without a topic."""
    import asyncio

    from auditrelay.agents.pipeline import running_pipeline
    from auditrelay.observability.collector import serve_worker_metrics
    from auditrelay.observability.logs import configure_logging
    from auditrelay.observability.metrics import heartbeat

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with running_pipeline(settings):
            logging.getLogger(__name__).info("Worker ready (delivery only)")
            beat = asyncio.create_task(heartbeat())
            try:
                await stop.wait()
            finally:
                beat.cancel()

    configure_logging(settings)
    stop_metrics = serve_worker_metrics(settings)
    _tune_gc()
    try:
        asyncio.run(main())
    finally:
        stop_metrics()


@dataclass
class Supervisor:
    """Child processes that live and die together."""

    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        click.echo(f"[run] starting {name}", err=True)
        self.children[name] = subprocess.Popen(list(argv), env=env)

    def wait_any(self) -> str:
        """Block until one child exits; returns its name."""
        while True:
            for name, proc in self.children.items():
                if proc.poll() is not None:
                    return name
            time.sleep(0.2)

    def stop_all(self) -> None:
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        for name, proc in self.children.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                click.echo(f"[run] {name} did not stop in time; killing it", err=True)
                proc.kill()
                proc.wait()


def _self_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "auditrelay.ops", *args]


def _demo_env(settings: Settings) -> tuple[Settings, dict[str, str]]:
    """Settings and child environment that let the pipeline call the loopback receiver."""
    loopback = ipaddress.ip_network("127.0.0.1/32")
    cidrs = tuple(dict.fromkeys((*settings.allow_private_cidrs, loopback)))
    env = {**os.environ, "AUDITRELAY_ALLOW_PRIVATE_CIDRS": ",".join(str(c) for c in cidrs)}
    # The receiver's lines are the demo; the worker's routine INFO lines would bury them.
    env.setdefault("AUDITRELAY_LOG_LEVEL", "WARNING")
    return settings.model_copy(update={"allow_private_cidrs": cidrs}), env


def _one_secret_key(settings: Settings,
                    env: dict[str, str] | None) -> tuple[Settings, dict[str, str] | None]:
    """Without ``AUDITRELAY_SECRET_KEY``, warn once here and hand every child the same
    development key, rather than each child warning on its own."""
    if settings.secret_key is not None:
        return settings, env
    from auditrelay.wire.secrets import secret_key_of

    key = secret_key_of(settings)  # warns, once for the whole run
    env = {**(env if env is not None else os.environ), "AUDITRELAY_SECRET_KEY": key}
    return settings.model_copy(update={"secret_key": SecretStr(key)}), env


def run_all(settings: Settings, *, demo: bool, demo_port: int = 8090) -> None:
    from auditrelay.ops import db_cmd, kafka_local, topics

    env: dict[str, str] | None = None
    if demo:
        settings, env = _demo_env(settings)
    settings, env = _one_secret_key(settings, env)
    broker = kafka_local.LocalKafka.from_settings(settings)
    started_broker = broker.up(progress=lambda msg: click.echo(f"[run] {msg}", err=True))
    click.echo(f"[run] Kafka at {broker.bootstrap}", err=True)
    supervisor = Supervisor()

    def _terminate(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        for line in topics.ensure_topics(settings).lines():
            click.echo(f"[run] topic {line}", err=True)
        # The children only check the schema: the upgrade step runs here, once.
        click.echo(f"[run] {db_cmd.upgrade(settings).describe()}", err=True)
        if demo:
            from auditrelay.ops import demo as demo_mod

            state = demo_mod.setup(settings, demo_port)
            click.echo(f"[run] demo: workspace {state.workspace_id}, destination "
                       f"{state.destination_id} -> http://127.0.0.1:{demo_port}/hook", err=True)
            supervisor.start("receiver", _self_command("demo", "receiver", "--port",
                                                       str(demo_port)), env)
        supervisor.start("worker", _self_command("worker"), env)
        supervisor.start("api", _self_command("api"), env)
        if demo:
            supervisor.start("producer", _self_command("demo", "producer"), env)
        name = supervisor.wait_any()
        click.echo(f"[run] {name} exited; stopping everything", err=True)
    except KeyboardInterrupt:
        click.echo("[run] stopping", err=True)
    finally:
        supervisor.stop_all()
        if started_broker:
            broker.down()
            click.echo("[run] broker stopped", err=True)
