"""Foreground processes: ``auditrelay worker`` and the all-in-one ``auditrelay run``.

``run`` supervises child processes (the worker and the API; the demo later)
in the foreground: Ctrl-C or SIGTERM stops them all, and the broker too when
this run started it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

import click

from schemas.settings import Settings

_STOP_GRACE_SECONDS = 15.0


def run_worker(settings: Settings) -> None:
    """Run the Faust worker with every production agent until it is signalled."""
    from faust.worker import Worker

    from agents.app import create_app, default_registrars

    app = create_app(settings, registrars=default_registrars())
    worker = Worker(app, loglevel=settings.log_level.lower(), quiet=True)
    worker.execute_from_commandline()


@dataclass
class Supervisor:
    """Child processes that live and die together."""

    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: Sequence[str]) -> None:
        click.echo(f"[run] starting {name}", err=True)
        self.children[name] = subprocess.Popen(list(argv))

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
    return [sys.executable, "-m", "ops", *args]


def run_all(settings: Settings, *, demo: bool) -> None:
    from ops import kafka_local, topics

    if demo:
        # The demo receiver and producer need the delivery pipeline; until it
        # exists, refuse rather than pretend.
        raise click.UsageError("--demo needs the delivery pipeline, which is not built yet")
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
        supervisor.start("worker", _self_command("worker"))
        supervisor.start("api", _self_command("api"))
        name = supervisor.wait_any()
        click.echo(f"[run] {name} exited; stopping everything", err=True)
    except KeyboardInterrupt:
        click.echo("[run] stopping", err=True)
    finally:
        supervisor.stop_all()
        if started_broker:
            broker.down()
            click.echo("[run] broker stopped", err=True)
