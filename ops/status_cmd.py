"""``auditrelay status``: a terminal table of destinations, from ``audit.delivery-status``.

Reads the compacted status topic (and the destination configs, for names and
enabled flags) as a snapshot; nothing is committed, nothing is changed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypeVar

import click
from pydantic import ValidationError

from auditrelay.schemas.destinations import DestinationConfig
from auditrelay.schemas.settings import Settings
from auditrelay.schemas.status import DestinationStatus

_COLUMNS = ("DESTINATION", "NAME", "WORKSPACE", "STATE", "LAST DELIVERY", "FAILURES", "NEXT TRY",
            "LAST ERROR")


def age(moment: datetime | None, now: datetime) -> str:
    """``just now``, ``42s ago``, ``5m ago``, ``3h ago``, ``2d ago``; ``never`` for None."""
    if moment is None:
        return "never"
    seconds = int((now - moment).total_seconds())
    if seconds < 5:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def until(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    seconds = int((moment - now).total_seconds())
    return "due" if seconds <= 0 else f"in {seconds}s" if seconds < 120 else f"in {seconds // 60}m"


def rows(statuses: dict[str, DestinationStatus], configs: dict[str, DestinationConfig],
         now: datetime) -> list[tuple[str, ...]]:
    """One row per destination known to either topic, sorted by workspace and id."""
    out: list[tuple[str, ...]] = []
    for dest_id in sorted(set(statuses) | set(configs),
                          key=lambda d: ((statuses.get(d) or configs[d]).workspace_id, d)):
        status, config = statuses.get(dest_id), configs.get(dest_id)
        known = status or config
        state: str = status.state if status else "no deliveries"
        if config is not None and not config.enabled:
            state = f"disabled ({config.disabled_reason or 'manual'})"
        last = age(status.last_delivery_at, now) if status else "never"
        if status and status.last_delivery_ok is False:
            last += " (failed)"
        out.append((dest_id, config.name if config else "(deleted)",
                    known.workspace_id if known else "-", state, last,
                    str(status.consecutive_failures) if status else "0",
                    until(status.next_attempt_at, now) if status else "-",
                    ((status.last_error or "") if status else "")[:60]))
    return out


def table(lines: list[tuple[str, ...]]) -> str:
    widths = [max(len(c), *(len(r[i]) for r in lines)) if lines else len(c)
              for i, c in enumerate(_COLUMNS)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*r).rstrip() for r in [_COLUMNS, *lines])


_Model = TypeVar("_Model", DestinationStatus, DestinationConfig)


def _parse(model: type[_Model], raw: dict[str, bytes | None]) -> dict[str, _Model]:
    parsed: dict[str, _Model] = {}
    for key, value in raw.items():
        if value is None:
            continue
        try:
            parsed[key] = model.model_validate_json(value)
        except ValidationError:
            continue
    return parsed


@click.command("status")
@click.option("--workspace", default=None, help="Only this workspace's destinations.")
@click.pass_obj
def status(settings: Settings, workspace: str | None) -> None:
    """Destinations and their delivery status, as dashboards see them."""
    from auditrelay.kafka.admin import read_compacted

    names = settings.topics
    statuses = _parse(DestinationStatus, read_compacted(settings.kafka_bootstrap,
                                                        names.delivery_status))
    configs = _parse(DestinationConfig, read_compacted(settings.kafka_bootstrap,
                                                       names.destinations))
    if workspace is not None:
        statuses = {k: v for k, v in statuses.items() if v.workspace_id == workspace}
        configs = {k: v for k, v in configs.items() if v.workspace_id == workspace}
    click.echo(table(rows(statuses, configs, datetime.now(UTC))))
