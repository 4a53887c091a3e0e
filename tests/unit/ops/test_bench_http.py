"""``auditrelay bench http``: its table, its arguments, and a tiny run end to end.

Not a timed test: the smoke run only checks that the command measures and
reports what it should. docs/scaling.md holds the measured numbers.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from auditrelay.ops.bench_http import (
    Result,
    _gated,
    best,
    drive,
    format_table,
    http,
    parse_concurrency,
)


def result(client: str = "aiohttp", *, cpu: float = 0.5, cut: bool = False,
           requests: int = 2000) -> Result:
    return Result(client=client, version="3.14.5", concurrency=1000, requests=requests,
                  seconds=4.0, cpu_seconds=cpu, peak_rss_kib=51_200, cut=cut)


def test_table_has_a_row_per_point_with_rate_cpu_per_request_and_rss() -> None:
    lines = format_table([result(), result("httpx", cut=True),
                          ("httpx2", "not installed (pip install httpx2)"),
                          result("httpcore", cut=True, requests=0)])

    assert lines[0].split() == ["client", "version", "concurrency", "requests", "requests/s",
                                "CPU", "ms/request", "peak", "RSS"]
    assert lines[1].split() == ["aiohttp", "3.14.5", "1,000", "2,000", "500", "0.25", "50",
                                "MiB"]
    assert "2,000 (cut)" in lines[2]
    assert lines[3].split(maxsplit=1) == ["httpx2", "not installed (pip install httpx2)"]
    # Cut before any request completed: no CPU per request to show.
    assert lines[4].split()[3:7] == ["0", "(cut)", "0", "-"]
    # Numbers are right-aligned under their headers.
    assert lines[0].index("requests/s") + len("requests/s") == lines[1].index(" 500 ") + 4


def test_the_least_disturbed_run_is_reported() -> None:
    assert best([result(cpu=0.9), result(cpu=0.4), result(cpu=0.6)]).cpu_seconds == 0.4


def test_concurrency_is_a_comma_separated_list_of_positive_integers() -> None:
    assert parse_concurrency("100,300, 1000") == [100, 300, 1000]
    for bad in ("", "100,x", "0", "100,-5", "200000"):
        with pytest.raises(click.BadParameter):
            parse_concurrency(bad)


def test_bad_arguments_are_usage_errors() -> None:
    runner = CliRunner()
    assert runner.invoke(http, ["--concurrency", "ten"]).exit_code == 2
    assert runner.invoke(http, ["--client", "requests"]).exit_code == 2
    assert runner.invoke(http, ["--max-connections", "0"]).exit_code == 2


def test_drive_keeps_the_concurrency_in_flight_and_counts_completions() -> None:
    in_flight = peak = 0

    async def send() -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0)
        in_flight -= 1

    assert asyncio.run(drive(send, 7, 50, 10.0)) == (50, False)
    assert peak == 7

    peak = 0  # --gate: no more than the slots reach the client, however many wait
    assert asyncio.run(drive(_gated(send, 3), 7, 50, 10.0)) == (50, False)
    assert peak == 3


def test_drive_fails_on_a_failed_request_and_reports_a_cut() -> None:
    async def fail() -> None:
        raise RuntimeError("the receiver answered 500")

    with pytest.raises(RuntimeError, match="500"):
        asyncio.run(drive(fail, 3, 10, 10.0))

    async def forever() -> None:
        await asyncio.Event().wait()

    assert asyncio.run(drive(forever, 3, 10, 0.05)) == (0, True)


@pytest.mark.slow
@pytest.mark.parametrize("client", ["httpx", "auditrelay"])  # a library, and ours as used
def test_bench_http_runs_end_to_end_against_a_loopback_receiver(client: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITRELAY_")}
    done = subprocess.run(
        [sys.executable, "-m", "auditrelay.ops", "bench", "http", "--client", client,
         "--concurrency", "10", "--requests", "50", "--max-connections", "5"],
        env=env, capture_output=True, text=True, timeout=30, check=False)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr

    assert "to 127.0.0.1; CPU of the client process only" in out, out
    row = re.search(rf"^{client} +0\.\d+\.\d+ +10 +50 +[\d,]+ +(\d+\.\d\d) +\d+ MiB$", out,
                    re.M)
    assert row is not None, out
    assert float(row.group(1)) > 0, out
