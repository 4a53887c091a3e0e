"""Smoke test of ``auditrelay bench destinations``: a tiny run whose figures must be real.

Not a timed test: 3 workspaces x 2 destinations through a real API process, one
worker (or two, sharing the partitions) and the loopback receiver; every healthy
destination must get its events with no failed attempt, each worker's peak RSS and
CPU must have been read, and the run's topics must be gone afterwards. docs/scaling.md
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


@pytest.mark.parametrize("workers", [1, 2])
def test_bench_destinations_reports_real_figures(kafka_bootstrap: str, workers: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITRELAY_")}
    done = subprocess.run(
        [sys.executable, "-m", "auditrelay.ops", "bench", "destinations", "--workspaces", "3",
         "--per-workspace", "2", "--slow", "0", "--deadline", "40", "--burst",
         "--workers", str(workers), "--bootstrap", kafka_bootstrap],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr

    assert "3 workspaces x 2 destinations = 6 (0 slow, 0 refusing)" in out, out
    assert re.search(r"first delivery: [\d.]+ s after the worker's start", out), out
    assert re.search(r"all healthy destinations complete: [\d.]+ s after", out), out
    assert "6 of 6 within 40 s (18 of 18 events arrived)" in out, out
    assert re.search(r"burst \(one event per workspace\): last receipt [\d.]+ s after the "
                     r"produce \(6 healthy destinations\)", out), out
    failed = re.search(r"failed delivery attempts: healthy (\d+), slow (\d+), refusing (\d+) "
                       r"\(of ([\d,]+) attempts\)", out)
    assert failed is not None, out
    assert failed.groups()[:3] == ("0", "0", "0"), out
    assert int(failed.group(4).replace(",", "")) >= 6, out  # one batch per destination at least
    each = r" \+ ".join([r"([\d,.]+)"] * workers)
    figures = re.search(rf"workers?: peak RSS {each} MiB, {each} s CPU, log {each} bytes", out)
    assert figures is not None, out
    rss, cpu = figures.groups()[:workers], figures.groups()[workers:2 * workers]
    assert all(int(kib.replace(",", "")) > 0 for kib in rss), out
    assert all(float(seconds) > 0 for seconds in cpu), out
    prefix = re.search(r"topics of (bench\.[0-9a-f]+\.) deleted", out)
    assert prefix is not None, out
    topics = admin_client(kafka_bootstrap).list_topics(timeout=10).topics
    assert not [t for t in topics if t.startswith(prefix.group(1))]
