"""Running host programs and installing Debian packages, for the provisioning modules."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

from auditrelay.schemas.errors import ProvisioningError


def run_checked(argv: Sequence[str], what: str, env: dict[str, str] | None = None) -> str:
    """Run a program; on failure raise ``ProvisioningError`` with the end of its output."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, env=env, check=False)
    except FileNotFoundError as exc:
        raise ProvisioningError(f"cannot {what}: {argv[0]} is not installed") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise ProvisioningError(f"cannot {what} (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def apt_install(packages: Sequence[str]) -> None:
    """Install Debian packages, as root only; otherwise say what to install."""
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise ProvisioningError(
            f"missing {', '.join(packages)}: install them (Debian: apt-get install "
            f"{' '.join(packages)}) or run as root so auditrelay can")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run_checked(["apt-get", "update", "-q"], "apt-get update", env=env)
    run_checked(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
                f"apt-get install {' '.join(packages)}", env=env)
