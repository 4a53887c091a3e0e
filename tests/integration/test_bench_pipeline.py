"""Smoke test of ``auditrelay bench pipeline``: it runs end to end and reports what it should.

Not a timed test: a tiny run that only checks the output names the figures
(events/s, latency percentiles, worker CPU and memory), that every event
arrived, and that the run's topics are gone afterwards. docs/performance.md
holds the measured numbers.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from auditrelay.kafka.admin import admin_client

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("destinations", ["1", "10"])
def test_bench_pipeline_reports_rate_latency_and_completeness(kafka_bootstrap: str,
                                                              destinations: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITRELAY_")}
    env["AUDITRELAY_KAFKA_BOOTSTRAP"] = kafka_bootstrap
    done = subprocess.run(
        [sys.executable, "-m", "auditrelay.ops", "bench", "pipeline", "--events", "300",
         "--destinations", destinations, "--rate", "1000"],
        env=env, capture_output=True, text=True, timeout=110, check=False)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr

    assert re.search(r"end to end: [\d,]+ events/s", out), out
    assert re.search(r"p50 [\d,]+ ms, p95 [\d,]+ ms, p99 [\d,]+ ms", out), out
    assert "received: 300 of 300 events (all events arrived)" in out, out
    assert "archive: 300 of 300 events (all archived)" in out, out
    assert re.search(r"worker: [\d.]+ s CPU .*peak RSS \d+ MiB", out), out
    prefix = re.search(r"topics and groups of (bench\.[0-9a-f]+\.) deleted", out)
    assert prefix is not None, out
    topics = admin_client(kafka_bootstrap).list_topics(timeout=10).topics
    assert not [t for t in topics if t.startswith(prefix.group(1))]


def test_bench_pipeline_check_names_the_targets_of_its_shape(kafka_bootstrap: str) -> None:
    """``--check`` prints each target of the run's shape with its figure; whether this
    tiny run meets them depends on the machine, so only the exit code's agreement with
    what it printed is checked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITRELAY_")}
    env["AUDITRELAY_KAFKA_BOOTSTRAP"] = kafka_bootstrap
    done = subprocess.run(
        [sys.executable, "-m", "auditrelay.ops", "bench", "pipeline", "--events", "300",
         "--rate", "1000", "--check"],
        env=env, capture_output=True, text=True, timeout=110, check=False)
    out = done.stdout
    assert "check: events arrived 300 of 300" in out, out + done.stderr
    assert re.search(r"check: p99 [\d,]+ ms \(target <= 150\)", out), out
    assert re.search(r"check: peak RSS \d+ MiB \(target <= 300\)", out), out
    if done.returncode:
        assert "targets missed: p99" in done.stderr, out + done.stderr
