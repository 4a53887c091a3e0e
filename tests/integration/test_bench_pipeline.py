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
    assert re.search(r"worker: [\d.]+ s CPU .*peak RSS \d+ MiB", out), out
    prefix = re.search(r"topics and groups of (bench\.[0-9a-f]+\.) deleted", out)
    assert prefix is not None, out
    topics = admin_client(kafka_bootstrap).list_topics(timeout=10).topics
    assert not [t for t in topics if t.startswith(prefix.group(1))]
