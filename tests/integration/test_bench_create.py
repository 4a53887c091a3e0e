"""Smoke test of ``auditrelay bench create``: it runs end to end and reports what it should.

Not a timed test: a tiny run through a real API process and the broker that only
checks that the output names the figures (destinations/s overall and per thousand,
latency percentiles, the outbox's drain time), and that the run's topics are gone
afterwards. docs/scaling.md holds the measured numbers.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from auditrelay.kafka.admin import admin_client

pytestmark = pytest.mark.slow


def test_bench_create_reports_rates_latency_and_the_outbox_drain(kafka_bootstrap: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITRELAY_")}
    done = subprocess.run(
        [sys.executable, "-m", "auditrelay.ops", "bench", "create", "--workspaces", "4",
         "--per-workspace", "3", "--clients", "2", "--bootstrap", kafka_bootstrap],
        env=env, capture_output=True, text=True, timeout=100, check=False)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr

    assert "4 workspaces x 3 destinations = 12, 2 clients, sqlite database" in out, out
    assert re.search(r"destinations: [\d,]+/s overall \(12 in [\d.]+ s\)", out), out
    assert re.search(r"1-12 +[\d,]+/s", out), out
    assert re.search(r"p50 [\d,.]+ ms, p99 [\d,.]+ ms", out), out
    assert re.search(r"outbox drained .* [\d.]+ s after the last create", out), out
    prefix = re.search(r"topics of (bench\.[0-9a-f]+\.) deleted", out)
    assert prefix is not None, out
    topics = admin_client(kafka_bootstrap).list_topics(timeout=10).topics
    assert not [t for t in topics if t.startswith(prefix.group(1))]
