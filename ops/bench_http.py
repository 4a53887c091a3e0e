"""``auditrelay bench http``: CPU per request of each HTTP client as concurrency grows.

Issue #19 asks for a delivery client whose cost does not grow with the number of
requests waiting for a connection. This bench measures it for every candidate
(``httpx``, ``httpx2``, ``aiohttp``, raw ``httpcore``), each used the way the
delivery client would use it: one client object, a pool of ``--max-connections``
keep-alive connections, 2 KB JSON POSTs answered ``200``; and ``auditrelay``, the
delivery client itself (``auditrelay.wire.client.DeliveryClient``, aiohttp behind its
slots, SSRF checks and capped reads), so the chosen client is measured as it is used.

A run, per client and per concurrency (a *point*):

1. one loopback receiver (``auditrelay.ops.bench_receiver``, raw asyncio HTTP/1.1,
   keep-alive) runs in its own process for the whole run, so its CPU is not
   counted;
2. each point runs in a fresh child process (``python -m auditrelay.ops.bench_http
   ...``): clients do not share imports, warm caches or peak RSS. The child opens
   every connection of the pool with a warm-up round, then sends ``--requests``
   POSTs with ``concurrency`` of them in flight at all times, and measures its own
   CPU time (``time.process_time()``) and wall time around that alone;
3. the receiver's count proves every request arrived; then it forgets them.

A point that takes longer than ``--max-seconds`` is cut: its figures are over the
requests completed by then, marked ``(cut)``, and its CPU per request is ``-`` if
none was (a pool whose cost grows with the queue would otherwise take hours at 10 000).
A child whose event loop is so blocked that even the cut cannot fire is killed 30 s
later: that point has no figures and the client's higher concurrencies are not run.

Everything goes to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.metadata
import importlib.util
import ipaddress
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import click

__all__ = ["CLIENTS", "Point", "Result", "format_table", "http", "parse_concurrency"]

#: The candidates, by import name (which is also the name pip installs), and the delivery
#: client as auditrelay uses it.
CLIENTS = ("httpx", "httpx2", "aiohttp", "httpcore", "auditrelay")
BODY_SIZE = 2048
_HOST = "127.0.0.1"
_BODY = json.dumps({"pad": "x" * (BODY_SIZE - len('{"pad":""}'))},
                   separators=(",", ":")).encode()
_HEADERS = {"content-type": "application/json"}
_READY_TIMEOUT = 30.0
#: How long after --max-seconds a child that has not reported is killed: its event loop
#: is blocked (the cut cannot even fire), which is itself the finding.
_GRACE = 30.0

Send = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Point:
    """One measurement: a client at one concurrency."""

    client: str
    concurrency: int
    requests: int
    max_connections: int
    gate: bool = False


@dataclass(frozen=True)
class Result:
    """What a point measured; ``requests`` are the completed ones (all, unless cut)."""

    client: str
    version: str
    concurrency: int
    requests: int
    seconds: float
    cpu_seconds: float
    peak_rss_kib: int
    cut: bool

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.cpu_seconds / self.requests if self.requests else float("inf")


def parse_concurrency(text: str) -> list[int]:
    """``"100,300"`` -> ``[100, 300]``; each between 1 and 100 000."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"not a comma-separated list of integers: {text!r}") from exc
    if not values or not all(1 <= value <= 100_000 for value in values):
        raise click.BadParameter(f"each concurrency must be 1..100000: {text!r}")
    return values


def installed_version(client: str) -> str | None:
    """The client's installed version, or None when it cannot be imported here."""
    if importlib.util.find_spec(client) is None:
        return None
    return importlib.metadata.version(client)


_COLUMNS = ("client", "version", "concurrency", "requests", "requests/s", "CPU ms/request",
            "peak RSS")


def format_table(rows: list[Result | tuple[str, str]]) -> list[str]:
    """The report's lines: a Result per measured point, ``(client, reason)`` per skipped one."""
    cells: list[tuple[str, ...]] = [_COLUMNS]
    for row in rows:
        if isinstance(row, Result):
            cells.append((row.client, row.version, f"{row.concurrency:,}",
                          f"{row.requests:,}" + (" (cut)" if row.cut else ""),
                          f"{row.per_second:,.0f}",
                          f"{row.cpu_ms_per_request:.2f}" if row.requests else "-",
                          f"{row.peak_rss_kib / 1024:.0f} MiB"))
        else:
            cells.append((row[0], row[1]))
    widths = [max(len(line[i]) for line in cells if len(line) == len(_COLUMNS))
              for i in range(len(_COLUMNS))]
    lines = []
    for line in cells:
        if len(line) != len(_COLUMNS):  # a skipped client: its reason spans the row
            lines.append(f"{line[0]:<{widths[0]}}  {line[1]}")
            continue
        left = [f"{line[0]:<{widths[0]}}", f"{line[1]:<{widths[1]}}"]
        lines.append("  ".join(left + [f"{c:>{w}}" for c, w in zip(line[2:], widths[2:],
                                                                    strict=True)]))
    return lines


def best(results: list[Result]) -> Result:
    """Of repeated runs of a point, the one with the least CPU per request (the least
    disturbed by the rest of the machine)."""
    return min(results, key=lambda result: result.cpu_ms_per_request)


# -- the parent: receiver, a child per point, the table --------------------------------------


@click.command("http")
@click.option("--client", "client_choice", type=click.Choice([*CLIENTS, "all"]),
              default="all", show_default=True)
@click.option("--concurrency", "concurrencies", default="100,300,1000,3000,10000",
              show_default=True, callback=lambda _ctx, _param, value: parse_concurrency(value),
              help="Requests in flight, comma-separated: a point each.")
@click.option("--requests", type=click.IntRange(1, 1_000_000), default=None,
              help="Requests per point.  [default: max(2000, concurrency)]")
@click.option("--max-connections", default=100, show_default=True,
              type=click.IntRange(1, 10_000), help="The pool's connection limit.")
@click.option("--repeat", default=1, show_default=True, type=click.IntRange(1, 10),
              help="Runs per point; the one with the least CPU per request is reported.")
@click.option("--max-seconds", default=60.0, show_default=True,
              type=click.FloatRange(1.0, 3600.0),
              help="A point still running after this long is cut (marked in the table).")
@click.option("--gate/--no-gate", default=False, show_default=True,
              help="Requests wait for one of --max-connections slots before the client, as "
              "auditrelay.wire.client does, so none ever queues inside the pool.")
def http(client_choice: str, concurrencies: list[int], requests: int | None,
         max_connections: int, repeat: int, max_seconds: float, gate: bool) -> None:
    """CPU per request of each HTTP client, 2 KB POSTs to a loopback keep-alive receiver."""
    clients = list(CLIENTS) if client_choice == "all" else [client_choice]
    click.echo(f"bench http: 2 KB POSTs, {max_connections} connections, best of {repeat}, "
               f"to {_HOST}; CPU of the client process only")
    if gate:
        click.echo(f"  gated: requests wait for one of {max_connections} slots before the client")
    click.echo(f"  Python {platform.python_version()}, {platform.machine()}, "
               f"{os.cpu_count()} CPUs")
    rows: list[Result | tuple[str, str]] = []
    with _receiver() as port:
        for client in clients:
            version = installed_version(client)
            if version is None:
                rows.append((client, f"not installed (pip install {client})"))
                continue
            hung = False
            for concurrency in concurrencies:
                if hung:  # a pool that blocked at a lower concurrency blocks here too
                    rows.append((client, f"{version} at {concurrency:,}: not run (blocked at "
                                 "a lower concurrency)"))
                    continue
                point = Point(client, concurrency, requests or max(2000, concurrency),
                              max_connections, gate)
                results = []
                for _ in range(repeat):
                    result = _run_child(point, port, max_seconds)
                    if result is None:
                        hung = True
                        break
                    results.append(result)
                if hung:
                    rows.append((client, f"{version} at {concurrency:,}: killed, its event loop "
                                 f"was blocked {max_seconds + _GRACE:.0f} s (no figures)"))
                    continue
                chosen = best(results)
                rows.append(chosen)
                click.echo(f"  {client} at {concurrency:,}: {chosen.requests:,} requests, "
                           f"{chosen.cpu_seconds:.1f} s CPU", err=True)
    for line in format_table(rows):
        click.echo(line)


@contextlib.contextmanager
def _receiver() -> Iterator[int]:
    """A bench receiver on a free loopback port, in its own process, until the block ends."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "auditrelay.ops.bench_receiver", str(port)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + _READY_TIMEOUT
        while not _answers(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise click.ClickException("the bench receiver did not start")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError):
        _received(port)
        return True
    return False


def _received(port: int) -> int:
    url = f"http://{_HOST}:{port}/stats"
    with urllib.request.urlopen(url, timeout=10) as response:
        return int(json.loads(response.read())["batches"])


def _forget(port: int) -> None:
    request = urllib.request.Request(f"http://{_HOST}:{port}/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - loopback http
        pass


def _run_child(point: Point, port: int, max_seconds: float) -> Result | None:
    """The point's figures from a fresh child process; None if it had to be killed."""
    argv = [sys.executable, "-m", "auditrelay.ops.bench_http", point.client,
            str(point.concurrency), str(point.requests), str(point.max_connections), str(port),
            str(max_seconds), str(int(point.gate))]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL, timeout=max_seconds + _GRACE)
    except subprocess.TimeoutExpired:
        _forget(port)
        return None
    if done.returncode != 0 or not done.stdout.strip():
        raise click.ClickException(f"{point.client} at {point.concurrency} failed:\n"
                                   + done.stderr[-3000:])
    result = Result(**json.loads(done.stdout.strip().splitlines()[-1]))
    received = _received(port)
    # The warm-up round's requests arrived too; a cut run may have more than it counted.
    if received < result.requests + point.max_connections:
        raise click.ClickException(f"{point.client} at {point.concurrency}: the receiver got "
                                   f"{received} requests, fewer than were answered")
    _forget(port)
    return result


# -- the child: one point, one client object ---------------------------------------------------


async def drive(send: Send, concurrency: int, requests: int,
                max_seconds: float) -> tuple[int, bool]:
    """``requests`` calls of ``send``, ``concurrency`` at a time; (completed, cut short)."""
    remaining = requests
    completed = 0

    async def worker() -> None:
        nonlocal remaining, completed
        while remaining > 0:
            remaining -= 1
            await send()
            completed += 1

    tasks = [asyncio.create_task(worker()) for _ in range(min(concurrency, requests))]
    finished, pending = await asyncio.wait(tasks, timeout=max_seconds,
                                           return_when=asyncio.FIRST_EXCEPTION)
    failed = [task for task in finished if task.exception() is not None]
    if failed:  # a failed request fails the point; the other workers stop with it
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        failed[0].result()
    return completed, bool(pending)


@contextlib.asynccontextmanager
async def _sender(client: str, url: str, max_connections: int) -> AsyncIterator[Send]:
    """A ``send()`` that POSTs the body once through one client object of ``client``."""
    if client in ("httpx", "httpx2"):
        # Imported by name: httpx2 is optional, and shares httpx's API.
        module: Any = importlib.import_module(client)
        limits = module.Limits(max_connections=max_connections,
                               max_keepalive_connections=max_connections)
        async with module.AsyncClient(limits=limits, timeout=None, trust_env=False) as http_client:
            async def send_httpx() -> None:
                response = await http_client.post(url, content=_BODY, headers=_HEADERS)
                _check(response.status_code)

            yield send_httpx
    elif client == "aiohttp":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections)
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=None)) as session:
            async def send_aiohttp() -> None:
                async with session.post(url, data=_BODY, headers=_HEADERS,
                                        allow_redirects=False) as response:
                    await response.read()
                    _check(response.status)

            yield send_aiohttp
    elif client == "httpcore":
        import httpcore

        # keepalive_expiry as httpx sets it: the same pool as httpx's, without httpx.
        async with httpcore.AsyncConnectionPool(
                max_connections=max_connections, max_keepalive_connections=max_connections,
                keepalive_expiry=5.0) as pool:
            headers = list(_HEADERS.items())

            async def send_httpcore() -> None:
                response = await pool.request("POST", url, headers=headers, content=_BODY)
                _check(response.status)

            yield send_httpcore
    elif client == "auditrelay":
        from auditrelay.wire.client import DeliveryClient, DeliveryConfig

        # Plain http to the loopback receiver: the one network the operator allows here.
        config = DeliveryConfig(allow_private_cidrs=(ipaddress.ip_network(f"{_HOST}/32"),),
                                max_connections=max_connections,
                                allowed_ports=((1, 65535),))
        async with DeliveryClient(config) as delivery:
            async def send_auditrelay() -> None:
                result = await delivery.post_batch(url, _BODY, _HEADERS)
                if result.status_code is None:
                    raise RuntimeError(f"the delivery failed: {result.error}")
                _check(result.status_code)

            yield send_auditrelay
    else:
        raise ValueError(f"unknown client {client!r}")


def _gated(send: Send, slots: int) -> Send:
    gate = asyncio.Semaphore(slots)

    async def send_gated() -> None:
        async with gate:
            await send()

    return send_gated


def _check(status: int) -> None:
    if status != 200:
        raise RuntimeError(f"the receiver answered {status}")


async def _measure(point: Point, port: int, max_seconds: float) -> None:
    url = f"http://{_HOST}:{port}/bench"
    async with _sender(point.client, url, point.max_connections) as send:
        if point.gate:
            send = _gated(send, point.max_connections)
        # Opens every connection of the pool, so the clock sees keep-alive reuse only.
        await drive(send, point.max_connections, point.max_connections, max_seconds)
        cpu_started, started = time.process_time(), time.perf_counter()
        completed, cut = await drive(send, point.concurrency, point.requests, max_seconds)
        cpu, seconds = time.process_time() - cpu_started, time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        result = Result(point.client, installed_version(point.client) or "?",
                        point.concurrency, completed, seconds, cpu, peak, cut)
        print(json.dumps(asdict(result)), flush=True)
        # A cut run leaves thousands of queued requests: tearing them down could take
        # longer than the run, and nothing is measured any more.
        os._exit(0)


def main(argv: list[str]) -> None:
    """Child entry point: CLIENT CONCURRENCY REQUESTS MAX_CONNECTIONS PORT MAX_SECONDS GATE."""
    if len(argv) != 7:
        raise SystemExit("usage: python -m auditrelay.ops.bench_http CLIENT CONCURRENCY "
                         "REQUESTS MAX_CONNECTIONS PORT MAX_SECONDS GATE(0|1)")
    client, concurrency, requests, connections, port, seconds, gate = argv
    point = Point(client, int(concurrency), int(requests), int(connections), gate == "1")
    asyncio.run(_measure(point, int(port), float(seconds)))


if __name__ == "__main__":
    main(sys.argv[1:])
