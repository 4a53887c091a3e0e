"""The ``auditrelay`` console script.

Each command builds the one ``Settings`` object from the environment and hands it
down. Heavy modules are imported inside commands so that ``--help`` stays fast.
"""

from __future__ import annotations

import sys

import click

from auditrelay.schemas.errors import AuditRelayError
from auditrelay.schemas.settings import Settings


def _settings() -> Settings:
    try:
        return Settings()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise click.ClickException(f"invalid AUDITRELAY_* setting: {exc}") from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="auditrelay")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """auditrelay: audit events from Kafka to SIEMs, signed and batched."""
    ctx.obj = _settings()


# --- kafka -----------------------------------------------------------------------------------


@cli.group()
def kafka() -> None:
    """The local single-node Kafka broker (KRaft, 127.0.0.1)."""


@kafka.command("up")
@click.pass_obj
def kafka_up(settings: Settings) -> None:
    """Fetch Kafka if needed, start the broker, print its bootstrap address."""
    from auditrelay.ops import kafka_local

    broker = kafka_local.LocalKafka.from_settings(settings)
    started = broker.up(progress=lambda msg: click.echo(msg, err=True))
    click.echo(broker.bootstrap)
    if not started:
        click.echo("(already running)", err=True)


@kafka.command("down")
@click.pass_obj
def kafka_down(settings: Settings) -> None:
    """Stop the broker that `kafka up` started (graceful, then forced)."""
    from auditrelay.ops import kafka_local

    stopped = kafka_local.LocalKafka.from_settings(settings).down()
    click.echo("stopped" if stopped else "not running")


@kafka.command("status")
@click.pass_obj
def kafka_status(settings: Settings) -> None:
    """Say whether the local broker runs, and where."""
    from auditrelay.ops import kafka_local

    status = kafka_local.LocalKafka.from_settings(settings).status()
    click.echo(status.describe())
    if not status.running:
        sys.exit(3)


# --- topics ----------------------------------------------------------------------------------


@cli.group()
def topics() -> None:
    """The contract's Kafka topics."""


@topics.command("ensure")
@click.option("--fix", is_flag=True, help="Alter drifted topic configs back to the contract.")
@click.pass_obj
def topics_ensure(settings: Settings, fix: bool) -> None:
    """Create every topic of contract section 4; report (or fix) drifted ones."""
    from auditrelay.ops import topics as topics_mod

    report = topics_mod.ensure_topics(settings, fix=fix)
    for line in report.lines():
        click.echo(line)
    if report.drifted and not fix:
        raise click.ClickException(
            f"{len(report.drifted)} topic(s) drifted from the contract; rerun with --fix"
        )
    unfixed = [d for d in report.drifted if d not in report.fixed]
    if unfixed:
        raise click.ClickException(
            f"{len(unfixed)} drift(s) cannot be fixed by altering the topic (the partition "
            "count of the delivery topics): recreate those topics empty")


@topics.command("migrate")
@click.pass_obj
def topics_migrate(settings: Settings) -> None:
    """Move the batches of the first release's topic per destination (audit.dest.{id})
    onto audit.deliveries, then delete those topics. Stop the old workers first."""
    from auditrelay.ops.migrate import migrate_legacy_topics

    report = migrate_legacy_topics(settings, echo=click.echo)
    click.echo(f"total: moved {report.total} batch(es) from {len(report.moved)} topic(s)")


# --- worker and run --------------------------------------------------------------------------


@cli.command()
@click.option("--stages", default=None, metavar="LIST",
              help="Comma-separated stages to run: router, archive, delivery, retention "
                   "[default: AUDITRELAY_WORKER_STAGES, all].")
@click.pass_obj
def worker(settings: Settings, stages: str | None) -> None:
    """Run the worker (router, archive, delivery, retention) in the foreground."""
    from auditrelay.ops import runner

    if stages is not None:
        try:
            settings = Settings.model_validate({**settings.model_dump(), "worker_stages": stages})
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--stages") from exc
    runner.run_worker(settings)


@cli.command()
@click.option("--demo/--no-demo", default=False,
              help="Also start a demo receiver (verifies and prints batches) and producer.")
@click.option("--demo-port", default=8090, show_default=True, type=click.IntRange(1, 65535),
              help="Port of the demo receiver on 127.0.0.1.")
@click.pass_obj
def run(settings: Settings, demo: bool, demo_port: int) -> None:
    """Broker, topics, worker and API in one foreground process group; Ctrl-C stops all."""
    from auditrelay.ops import runner

    runner.run_all(settings, demo=demo, demo_port=demo_port)


# The commands that live in modules of their own (emit, bench, api, workspaces, ...).
def _register_commands() -> None:
    from auditrelay.ops import commands

    for command in commands.all_commands():
        cli.add_command(command)


_register_commands()


def main() -> None:
    """Console-script entry point: library errors become one clear line and exit 1."""
    try:
        cli(standalone_mode=True)
    except AuditRelayError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
