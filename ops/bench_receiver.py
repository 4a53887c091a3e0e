"""The loopback receivers of ``auditrelay bench pipeline``: one lean process, many ports.

Run as ``python -m auditrelay.ops.bench_receiver PORT [PORT ...]``. Every port serves a raw
HTTP/1.1 handler on ``asyncio.start_server`` (no framework: the receivers must
not be what limits the benchmark). A ``POST`` to any path other than the
control paths is a delivery: its receipt time and body are stored and it is
answered ``200`` at once; nothing is parsed while the clock runs but a count of
the events in the body (a C-level substring count).

Control paths, on any port:

- ``GET /stats``: ``{"events": n, "batches": b, "last": t}``, events counted with
  duplicates, ``last`` the receipt time of the newest batch;
- ``POST /reset``: forget everything received (the warm-up batches);
- ``GET /report?since=T``: per event emitted at ``T`` or later (earlier ones are
  warm-up events redelivered after the reset, at least once), latency = receipt
  time of its first copy minus the emit time the producer put in
  ``data.metadata.t``; returns the unique and duplicate counts, the first and
  last receipt and the latency percentiles.

The receiver and the producer share the machine's clock (``time.time()``), so
the latencies need no clock synchronisation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Store", "percentile", "report", "serve"]

_ID = re.compile(rb'"id":"(aud_[0-9A-Z]+)"')
# The bench producer's emit stamp: fixed-point seconds in data.metadata.t.
_STAMP = re.compile(rb'"t":"(\d+\.\d+)"')
_EVENT_MARK = b'"specversion"'
_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


@dataclass
class Store:
    """What the receivers got: (receipt time, port, body) per delivery."""

    batches: list[tuple[float, int, bytes]] = field(default_factory=list)
    events: int = 0

    def add(self, at: float, port: int, body: bytes) -> None:
        self.batches.append((at, port, body))
        self.events += body.count(_EVENT_MARK)

    def reset(self) -> None:
        self.batches.clear()
        self.events = 0

    def stats(self) -> dict[str, Any]:
        last = self.batches[-1][0] if self.batches else None
        return {"events": self.events, "batches": len(self.batches), "last": last}


def percentile(ordered: list[float], share: float) -> float:
    """Nearest-rank percentile of an ascending list (``share`` in 0..1)."""
    if not ordered:
        return float("nan")
    rank = max(1, round(share * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def report(store: Store, since: float = 0.0) -> dict[str, Any]:
    """Unique and duplicate counts, receipt span and latency percentiles (seconds), of the
    events emitted at ``since`` or later."""
    first_seen: dict[bytes, float] = {}
    latencies: list[float] = []
    per_port: dict[int, int] = {}
    times: list[float] = []
    copies = 0
    for at, port, body in store.batches:
        for event_id, stamp in zip(_ID.findall(body), _STAMP.findall(body), strict=False):
            if float(stamp) < since:
                continue
            if not times or times[-1] != at:
                times.append(at)  # a batch holding events of the run
            copies += 1
            per_port[port] = per_port.get(port, 0) + 1
            if event_id in first_seen:
                continue
            first_seen[event_id] = at
            latencies.append(at - float(stamp))
    latencies.sort()
    return {
        "unique": len(first_seen), "duplicates": copies - len(first_seen),
        "batches": len(times), "stamped": len(latencies),
        "first_receipt": min(times) if times else None,
        "last_receipt": max(times) if times else None,
        "per_port": {str(p): n for p, n in sorted(per_port.items())},
        "latency": {name: percentile(latencies, share) for name, share in
                    (("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))},
    }


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes, bytes] | None:
    """Method, path and body of the next request on the connection; None at its end."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    request_line, _, header_block = head.partition(b"\r\n")
    method, path, _ = request_line.split(b" ", 2)
    length = 0
    for line in header_block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
            break
    body = await reader.readexactly(length) if length else b""
    return method, path, body


def _json_response(payload: dict[str, Any]) -> bytes:
    data = json.dumps(payload).encode()
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(data)).encode() + b"\r\n\r\n" + data)


def _handler(store: Store, port: int) -> Any:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (request := await _read_request(reader)) is not None:
                method, path, body = request
                if path == b"/stats":
                    writer.write(_json_response(store.stats()))
                elif path.startswith(b"/report"):
                    since = float(path.partition(b"?since=")[2] or 0)
                    writer.write(_json_response(report(store, since)))
                elif path == b"/reset":
                    store.reset()
                    writer.write(_OK)
                elif method == b"POST":
                    store.add(time.time(), port, body)
                    writer.write(_OK)
                else:
                    writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return handle


async def serve(ports: list[int]) -> None:
    """Serve every port until cancelled; prints ``ready`` once all listen."""
    store = Store()
    servers = [await asyncio.start_server(_handler(store, port), "127.0.0.1", port)
               for port in ports]
    print("ready", flush=True)
    try:
        await asyncio.gather(*(server.serve_forever() for server in servers))
    finally:
        for server in servers:
            server.close()


def main(argv: list[str]) -> None:
    ports = [int(arg) for arg in argv]
    if not ports:
        raise SystemExit("usage: python -m auditrelay.ops.bench_receiver PORT [PORT ...]")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(ports))


if __name__ == "__main__":
    main(sys.argv[1:])
