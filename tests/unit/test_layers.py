"""The dependency rule of docs/architecture.md, as `make lint` checks it (import-linter).

The real tree keeps every contract; a copy of it with one deliberate violation
breaks the contract that forbids it, so the check can fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.slow


def lint_imports(package_parent: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if package_parent is not None:  # a copy of the package, found before the installed one
        env["PYTHONPATH"] = str(package_parent)
    return subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"),
                           "--no-cache"], capture_output=True, text=True, env=env,
                          cwd=package_parent or ROOT, check=False, timeout=120)


def test_the_tree_keeps_every_layer_contract() -> None:
    result = lint_imports()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("schemas/leak.py", "import auditrelay.agents.router", "schemas import nothing of ours"),
    ("producer/leak.py", "import auditrelay.store.db", "producer imports only schemas of ours"),
    ("producer/heavy.py", "import faust", "what services embed needs neither"),
    ("wire/leak.py", "import auditrelay.agents.dispatch", "the shared rooms never import"),
    ("api/leak.py", "import auditrelay.agents.router", "stages and API never import each other"),
    ("agents/leak.py", "import auditrelay.ops.cli", "nothing imports ops"),
])
def test_a_deliberate_violation_breaks_its_contract(tmp_path: Path, module: str, line: str,
                                                    contract: str) -> None:
    # The card's folders are links inside auditrelay/: the copy resolves them.
    shutil.copytree(ROOT / "auditrelay", tmp_path / "auditrelay",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "auditrelay" / module).write_text(f'"""A violation."""\n\n{line}\n')
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    broken = [row for row in result.stdout.splitlines() if row.endswith("BROKEN")]
    # ops imports everything: reaching it also reaches what it imports, so that
    # violation may break further contracts; each one breaks its own.
    assert any(row.startswith(contract) for row in broken), result.stdout
