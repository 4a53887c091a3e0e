"""Smoke test of ``auditrelay bench read``: both clients read every record, and the topic
is gone afterwards. Not a timed test; docs/performance.md holds the measured numbers."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from auditrelay.kafka.admin import admin_client

pytestmark = pytest.mark.slow


def test_bench_read_reports_each_clients_cpu_per_record(kafka_bootstrap: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITRELAY_")}
    env["AUDITRELAY_KAFKA_BOOTSTRAP"] = kafka_bootstrap
    done = subprocess.run(
        [sys.executable, "-m", "auditrelay.ops", "bench", "read", "--events", "500",
         "--partitions", "2", "--repeat", "1"],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    for client in ("aiokafka", "confluent-kafka"):
        line = re.search(rf"^  {client} +[\d,]+ records/s +([\d.]+) us CPU/record \(process\), "
                         r"+([\d.]+) \(reading thread\)$", out, re.MULTILINE)
        assert line is not None, out
        assert float(line.group(1)) > 0
    topic = re.search(r"topic (bench\.read\.[0-9a-f]+) deleted", out)
    assert topic is not None, out
    assert topic.group(1) not in admin_client(kafka_bootstrap).list_topics(timeout=10).topics
