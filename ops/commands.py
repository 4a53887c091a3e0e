"""Registry of the CLI commands that live in their own modules.

Each module defines one click command or group; adding a module means adding
it to the list below, nothing else.
"""

from __future__ import annotations

import click


def all_commands() -> list[click.Command]:
    from auditrelay.ops.api_cmd import api, destinations, postgres, workspaces
    from auditrelay.ops.bench import bench
    from auditrelay.ops.db_cmd import db
    from auditrelay.ops.demo import demo
    from auditrelay.ops.dlq_cmd import dlq
    from auditrelay.ops.emit_cmd import emit
    from auditrelay.ops.retention_cmd import retention
    from auditrelay.ops.status_cmd import status

    commands: list[click.Command] = [emit, bench, api, workspaces, destinations, postgres, dlq,
                                     demo, status]
    commands.append(retention)
    commands.append(db)
    return commands
