"""deploy/prometheus: the alert rules pass ``promtool check rules`` and their unit tests
(``promtool test rules``), and the example configuration passes ``promtool check config``.

promtool comes from Debian's ``prometheus`` package, which ``make test`` installs
(``APT_PACKAGES``): without it these tests fail, they do not skip. They are marked
``system``, so that ``make test-fast``, which installs no Debian package, leaves them out.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.system

PROMETHEUS = Path(__file__).resolve().parents[3] / "deploy" / "prometheus"


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: it comes from Debian's `prometheus` package, which "
                    "`make test` installs (make system-deps); or run "
                    "`apt-get install --no-install-recommends prometheus`")
    return subprocess.run([path, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


def test_the_rules_are_valid() -> None:
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def test_the_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_unit_tests_catch_a_rule_that_never_fires(tmp_path: Path) -> None:
    """The unit tests are not vacuous: with the lag threshold out of reach they fail."""
    shutil.copy(PROMETHEUS / "alerts_test.yml", tmp_path)
    rules = (PROMETHEUS / "alerts.yml").read_text()
    assert rules.count("> 1000)") == 1
    (tmp_path / "alerts.yml").write_text(rules.replace("> 1000)", "> 1000000)"))
    result = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "AuditrelayConsumerLagGrowing" in result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"]
             if case["exp_alerts"]}
    silent = {case["alertname"] for test in tests for case in test["alert_rule_test"]
              if not case["exp_alerts"]}
    assert alerts == fired, "alerts without a case that fires"
    assert alerts == silent, "alerts without a case that must not fire"


def test_the_example_configuration_is_valid() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
