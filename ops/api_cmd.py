"""CLI commands of the management side: ``api``, ``workspaces``, ``destinations``, ``postgres``."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import click

from auditrelay.schemas.settings import Settings
from auditrelay.wire.ssrf import IPAddress


@click.command("api")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=None, type=click.IntRange(1, 65535),
              help="Port to listen on [default: AUDITRELAY_API_PORT, 8080].")
@click.pass_obj
def api(settings: Settings, host: str, port: int | None) -> None:
    """Serve the management API (OpenAPI at /docs and /openapi.json)."""
    import uvicorn

    from auditrelay.api.app import create_app
    from auditrelay.observability.logs import configure_logging

    configure_logging(settings)
    port = port or settings.api_port
    if settings.api_metrics_port is None and not _is_loopback(host):
        # The default keeps /metrics where scrapers found it; say so where it may face tenants.
        logging.getLogger(__name__).warning(
            "GET /metrics is served without authentication on %s:%d, the API's own port; set "
            "AUDITRELAY_API_METRICS_PORT to serve it on a listener of its own "
            "(docs/metrics.md)", host, port)
    # JSON: uvicorn installs no handlers of its own, so its lines reach the JSON root handler.
    extra: dict[str, Any] = {"log_config": None} if settings.log_format == "json" else {}
    uvicorn.run(create_app(settings), host=host, port=port,
                log_level=settings.log_level.lower(), **extra)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@click.group()
def workspaces() -> None:
    """Workspaces and their plans."""


@workspaces.command("create")
@click.argument("name")
@click.option("--plan", required=True, help="A plan name from AUDITRELAY_PLANS.")
@click.pass_obj
def workspaces_create(settings: Settings, name: str, plan: str) -> None:
    """Create a workspace; prints its id and its token (shown this once)."""
    from auditrelay.api.service import Service
    from auditrelay.store.engine import Store, checked_engine
    from auditrelay.wire.secrets import box_from_settings

    store = Store(checked_engine(settings.database_url))
    service = Service(settings, box_from_settings(settings), resolver=_no_resolver)
    with store.transaction() as session:
        workspace, token = service.create_workspace(session, name, plan)
    click.echo(f"id     {workspace.id}")
    click.echo(f"token  {token}")
    click.echo("(the self-audit event is published by the API's outbox publisher, "
               "or by `auditrelay destinations resync`)", err=True)


@click.group()
def destinations() -> None:
    """Destinations as Kafka sees them."""


@destinations.command("resync")
@click.pass_obj
def destinations_resync(settings: Settings) -> None:
    """Repair drift between the database and Kafka (config records, tombstones)."""
    from auditrelay.api.resync import resync
    from auditrelay.api.service import Service
    from auditrelay.kafka.admin import admin_client
    from auditrelay.producer.config import ProducerConfig
    from auditrelay.store.engine import Store, checked_engine
    from auditrelay.store.outbox import OutboxPublisher
    from auditrelay.wire.secrets import box_from_settings

    store = Store(checked_engine(settings.database_url))
    service = Service(settings, box_from_settings(settings), resolver=_no_resolver)
    admin = admin_client(settings.kafka_bootstrap)
    publisher = OutboxPublisher(store, ProducerConfig.from_settings(
        settings, client_id="auditrelay-resync").kafka_config(), admin)
    report = resync(service, store, publisher)
    for line in report.lines():
        click.echo(line)


@click.group()
def postgres() -> None:
    """The local PostgreSQL server (development and tests, 127.0.0.1)."""


@postgres.command("up")
@click.pass_obj
def postgres_up(settings: Settings) -> None:
    """Install (Debian) and start PostgreSQL; print its SQLAlchemy URL."""
    from auditrelay.ops.postgres_local import LocalPostgres

    server = LocalPostgres.from_settings(settings)
    started = server.up()
    click.echo(server.url)
    if not started:
        click.echo("(already running)", err=True)


@postgres.command("status")
@click.pass_obj
def postgres_status(settings: Settings) -> None:
    """Say whether the local PostgreSQL runs, its URL, and where its data and log live."""
    from auditrelay.ops.postgres_local import LocalPostgres

    server = LocalPostgres.from_settings(settings)
    click.echo(f"{'running' if server.running() else 'stopped'}: {server.url}")
    click.echo(f"data: {server.data_dir}")
    click.echo(f"log:  {server.log_path}")


@postgres.command("down")
@click.pass_obj
def postgres_down(settings: Settings) -> None:
    """Stop the local PostgreSQL server."""
    from auditrelay.ops.postgres_local import LocalPostgres

    click.echo("stopped" if LocalPostgres.from_settings(settings).down() else "not running")


def _no_resolver(host: str, port: int) -> list[IPAddress]:
    # These commands never validate URLs; a resolver that is called is a bug.
    raise RuntimeError(f"unexpected DNS lookup of {host}:{port}")
