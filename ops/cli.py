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
    """The local Kafka: one KRaft node by default, or a cluster (--brokers 3), on 127.0.0.1."""


_BROKERS = click.option(
    "--brokers", type=click.IntRange(1, 9), default=None,
    help="1: the single broker (var/kafka); 2 or more: the local cluster "
         "(var/kafka-cluster, ports from AUDITRELAY_KAFKA_CLUSTER_PORT). "
         "[up: 1; down, status: both, or the one given]")


@kafka.command("up")
@_BROKERS
@click.pass_obj
def kafka_up(settings: Settings, brokers: int | None) -> None:
    """Fetch Kafka if needed, start the broker(s), print the bootstrap address."""
    from auditrelay.ops import kafka_local

    progress = lambda msg: click.echo(msg, err=True)  # noqa: E731
    local: kafka_local.LocalKafka | kafka_local.LocalCluster
    if brokers is None or brokers == 1:
        local = kafka_local.LocalKafka.from_settings(settings)
    else:
        local = kafka_local.LocalCluster.from_settings(settings, brokers)
    started = local.up(progress=progress)
    click.echo(local.bootstrap)
    if not started:
        click.echo("(already running)", err=True)


@kafka.command("down")
@_BROKERS
@click.pass_obj
def kafka_down(settings: Settings, brokers: int | None) -> None:
    """Stop the broker(s) that `kafka up` started (graceful, then forced)."""
    from auditrelay.ops import kafka_local

    stopped = False
    if brokers in (None, 1):
        stopped |= kafka_local.LocalKafka.from_settings(settings).down()
    if brokers != 1:
        cluster = kafka_local.LocalCluster.from_settings(settings, brokers)
        stopped |= cluster.home.exists() and cluster.down()
    click.echo("stopped" if stopped else "not running")


@kafka.command("status")
@_BROKERS
@click.pass_obj
def kafka_status(settings: Settings, brokers: int | None) -> None:
    """Each local node, the cluster's controller quorum and under-replicated partitions;
    exits 3 when nothing runs."""
    from auditrelay.ops import kafka_local

    running = False
    cluster = kafka_local.LocalCluster.from_settings(settings, None if brokers == 1 else brokers)
    show_cluster = brokers not in (None, 1) or (brokers is None and cluster.home.exists())
    if brokers in (None, 1):
        status = kafka_local.LocalKafka.from_settings(settings).status()
        running |= status.running
        click.echo(f"single broker: {status.describe()}" if show_cluster else status.describe())
    if show_cluster:
        report = cluster.status()
        running |= report.running > 0
        click.echo(f"cluster ({len(report.nodes)} brokers, bootstrap {cluster.bootstrap}):")
        for line in report.lines():
            click.echo(f"  {line}")
    if not running:
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
            "count of the delivery topics, a replication factor): recreate those topics "
            "empty, or reassign their partitions (docs/kafka.md)")


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
