"""``auditrelay emit``: write audit events to Kafka from the command line.

The event is a JSON object, given as the argument or read from stdin (one
object per line)::

    auditrelay emit '{"workspace_id": "ws_xyz", "category": "workspace",
                      "action": "created", "actor": {"id": "usr_1", "type": "user"}}'

``--count`` repeats every input (each copy gets its own id and time) and
``--rate`` paces the whole run, for load.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import click

from auditrelay.schemas.errors import InvalidInputError
from auditrelay.schemas.settings import Settings

_KEYS = frozenset(("workspace_id", "category", "action", "actor", "target", "subject",
                   "description", "metadata"))
_REQUIRED = ("workspace_id", "category", "action")


def parse_input(text: str, where: str) -> dict[str, Any]:
    """One emit request from JSON, with a usage error naming what is wrong."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.UsageError(f"{where}: not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise click.UsageError(f"{where}: expected a JSON object")
    unknown = sorted(set(value) - _KEYS)
    if unknown:
        raise click.UsageError(f"{where}: unknown keys {', '.join(unknown)}; "
                               f"known: {', '.join(sorted(_KEYS))}")
    missing = [key for key in _REQUIRED if key not in value]
    if missing:
        raise click.UsageError(f"{where}: missing {', '.join(missing)}")
    return value


def _inputs(data: str | None) -> Iterator[dict[str, Any]]:
    if data is not None and data != "-":
        yield parse_input(data, "DATA")
        return
    for number, line in enumerate(sys.stdin, start=1):
        if line.strip():
            yield parse_input(line, f"stdin line {number}")


@click.command("emit")
@click.argument("data", required=False)
@click.option("--count", default=1, show_default=True, type=click.IntRange(min=1),
              help="Emit each input this many times (fresh id and time each).")
@click.option("--rate", default=0.0, type=click.FloatRange(min=0),
              help="Events per second at most; 0 means as fast as possible.")
@click.option("--topic", default=None, help="Topic to write to [default: the events topic].")
@click.option("-q", "--quiet", is_flag=True, help="Do not print event ids.")
@click.pass_obj
def emit(settings: Settings, data: str | None, count: int, rate: float, topic: str | None,
         quiet: bool) -> None:
    """Emit audit events: DATA is a JSON object, or '-'/absent to read JSON lines from stdin."""
    from auditrelay.producer import AuditProducer, ProducerConfig

    config = ProducerConfig.from_settings(settings, **({"topic": topic} if topic else {}))
    emitted = 0
    started = time.monotonic()
    with AuditProducer(config) as producer:
        for request in _inputs(data):
            for _ in range(count):
                if rate:
                    # Pace against the schedule, not the previous event, so jitter
                    # does not accumulate.
                    delay = started + emitted / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                try:
                    event = producer.emit(**request)
                except InvalidInputError as exc:
                    raise click.ClickException(f"invalid event ({exc.field}): {exc}") from exc
                emitted += 1
                if not quiet:
                    click.echo(event.id)
    elapsed = time.monotonic() - started
    click.echo(f"emitted {emitted} event(s) to {config.topic} in {elapsed:.2f} s", err=True)
