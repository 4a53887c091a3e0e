"""Smoke test of ``auditrelay bench archive``: every event becomes a row of a database made
for the run, and the run's topic is gone afterwards. Not a timed test; docs/performance.md
holds the measured numbers."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from auditrelay.kafka.admin import admin_client

pytestmark = pytest.mark.slow


def test_bench_archive_reports_rows_per_second(kafka_bootstrap: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITRELAY_")}
    env["AUDITRELAY_KAFKA_BOOTSTRAP"] = kafka_bootstrap
    before = set(admin_client(kafka_bootstrap).list_topics(timeout=10).topics)
    done = subprocess.run(
        [sys.executable, "-m", "auditrelay.ops", "bench", "archive", "--events", "500",
         "--partitions", "2"],
        env=env, capture_output=True, text=True, timeout=180, check=False)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    line = re.search(r"^  Kafka -> archive agent -> sqlite: ([\d,]+) rows/s \(([\d.]+) s from "
                     r"worker start, (?:[\d,]+ rows/s from the first commit|every row there "
                     r"at the first count)\)$", out, re.MULTILINE)
    assert line is not None, out
    assert int(line.group(1).replace(",", "")) > 0
    assert re.search(r"^  parse \+ bulk insert only \(no Kafka\): [\d,]+ rows/s$", out,
                     re.MULTILINE), out
    left = set(admin_client(kafka_bootstrap).list_topics(timeout=10).topics) - before
    assert not [name for name in left if name.startswith("bench.archive.")], left
