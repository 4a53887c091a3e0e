"""Registry of the CLI commands that live in their own modules.

Each module defines one click command or group; adding a module means adding
it to the list below, nothing else.
"""

from __future__ import annotations

import click


def all_commands() -> list[click.Command]:
    commands: list[click.Command] = []
    return commands
