"""The loopback receivers of ``auditrelay bench pipeline``: one lean process, many ports.

Run as ``python -m auditrelay.ops.bench_receiver [--answer KIND] PORT[:DELAY] [...]``. Every
port serves a raw HTTP/1.1 handler on ``asyncio.start_server`` (no framework: the
receivers must not be what limits the benchmark). A ``POST`` to any path other than the
control paths is a delivery: its receipt time and body (gunzipped if it came
compressed) are stored and it is answered at once, ``200`` or, with ``--answer KIND``,
what that destination kind's receiver answers when it takes a request
(``ANSWERS``); nothing is parsed while the clock runs but a count of the events in the
body (a C-level substring count; of envelopes carried as JSON strings, as in Datadog's
``message``, only those strings are kept). A port given as ``PORT:DELAY``
answers its deliveries only ``DELAY`` seconds after they arrived (a slow receiver);
their receipt time is still the arrival. ``bench destinations`` tells its many
destinations apart by the URL path of one port.

Control paths, on any port:

- ``GET /stats``: ``{"events": n, "batches": b, "last": t}``, events counted with
  duplicates, ``last`` the receipt time of the newest batch;
- ``POST /reset``: forget everything received (the warm-up batches);
- ``GET /report?since=T``: per event emitted at ``T`` or later (earlier ones are
  warm-up events redelivered after the reset, at least once), latency = receipt
  time of its first copy minus the emit time the producer put in
  ``data.metadata.t``; returns the unique and duplicate counts, the first and
  last receipt and the latency percentiles;
- ``GET /complete?prefix=P&min=N[&after=T]``: of the paths starting with ``P``, how many
  got at least ``N`` events of the bench producer (copies counted; received at ``T`` or
  later if given) (``complete``), the newest receipt among those (``done_at``), the
  events of all of them (``events``) and the first receipt of all;
- ``GET /paths?since=T&prefix=P``: per path starting with ``P``, the unique events
  emitted at ``T`` or later and their p99 latency, and the percentiles of them all.
- ``GET /receipts?since=T&prefix=P``: per path starting with ``P``, [emit time, receipt
  time] of the first copy of each event emitted at ``T`` or later.

The receiver and the producer share the machine's clock (``time.time()``), so
the latencies need no clock synchronisation.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Store", "percentile", "receipts", "report", "serve"]

_ID = re.compile(rb'"id":"(aud_[0-9A-Za-z-]+)"')
# The bench producer's emit stamp: fixed-point seconds in data.metadata.t.
_STAMP = re.compile(rb'"t":"(\d+\.\d+)"')
_EVENT_MARK = b'"specversion"'
# What only the bench producer's events carry (not, e.g., the API's self-audit events).
_STAMP_MARK = b'"metadata":{"t":"'
_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
# An envelope carried as a JSON string (Datadog's ``message``) has its quotes escaped.
_ESCAPED_MARK = b'\\"specversion\\"'
_ESCAPED_STAMP_MARK = b'\\"metadata\\":{\\"t\\":\\"'


def _messages(body: bytes) -> bytes:
    """Datadog's logs with only the envelopes in their ``message`` countable: the other
    attributes repeat the event's id and emit stamp, unescaped (C-level replaces, no
    parse: the receiver must not be what limits the bench)."""
    return (body.replace(b'"id":', b'"_":').replace(b'"t":"', b'"_":"')
            .replace(b'\\"', b'"'))


def _readable(body: bytes) -> bytes:
    """A received body with its envelopes' ids and stamps findable by ``_ID``/``_STAMP``."""
    return _messages(body) if _ESCAPED_MARK in body else body


def _stamped(body: bytes) -> int:
    """Events of the bench producer in a received body."""
    return body.count(_ESCAPED_STAMP_MARK if _ESCAPED_MARK in body else _STAMP_MARK)


def _answer(status: bytes, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: " + content_type
            + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


#: How each destination kind's receiver says it took a request (``--answer KIND``).
ANSWERS: dict[str, bytes] = {
    "webhook": _OK,
    "splunk_hec": _answer(b"200 OK", b'{"text":"Success","code":0}'),
    "datadog_logs": _answer(b"202 Accepted", b"{}"),
    "sumo_logic": _OK,
    "elasticsearch": _answer(b"200 OK", b'{"errors":false}'),
    "slack": _answer(b"200 OK", b"ok", b"text/html"),
}


@dataclass
class Store:
    """What the receivers got: (receipt time, port, body, path) per delivery."""

    batches: list[tuple[float, int, bytes, bytes]] = field(default_factory=list)
    events: int = 0
    #: Per URL path: [stamped events (copies counted), receipt time of the newest batch].
    paths: dict[bytes, list[float]] = field(default_factory=dict)

    def add(self, at: float, port: int, body: bytes, path: bytes = b"/") -> None:
        # Counted as it arrives, by C-level counts only: a request's answer waits for
        # this, and the receiver must not be what limits the bench. Datadog's escaped
        # envelopes are made readable later, by the reports (``_readable``).
        self.batches.append((at, port, body, path))
        escaped = _ESCAPED_MARK in body
        self.events += body.count(_ESCAPED_MARK if escaped else _EVENT_MARK)
        # Kept as it arrives: polling thousands of paths must not re-parse every body.
        entry = self.paths.setdefault(path, [0, 0.0])
        entry[0] += _stamped(body)
        entry[1] = at

    def reset(self) -> None:
        self.batches.clear()
        self.paths.clear()
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
    for at, port, body, _ in store.batches:
        readable = _readable(body)
        for event_id, stamp in zip(_ID.findall(readable), _STAMP.findall(readable),
                                   strict=False):
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


def complete(store: Store, prefix: bytes, least: int, after: float = 0.0) -> dict[str, Any]:
    """How many paths under ``prefix`` got ``least`` stamped events or more (copies counted),
    of those received at ``after`` or later if given."""
    counts = store.paths if not after else _received_after(store, after)
    done, done_at, events, paths = 0, None, 0, 0
    for path, (count, last) in counts.items():
        if not path.startswith(prefix):
            continue
        paths += 1
        events += int(count)
        if count >= least:
            done += 1
            done_at = last if done_at is None else max(done_at, last)
    first = store.batches[0][0] if store.batches else None
    return {"paths": paths, "complete": done, "done_at": done_at, "events": events,
            "first": first}


def _received_after(store: Store, after: float) -> dict[bytes, list[float]]:
    counts: dict[bytes, list[float]] = {}
    for at, _, body, path in reversed(store.batches):  # appended in time order
        if at < after:
            break
        entry = counts.setdefault(path, [0, at])
        entry[0] += _stamped(body)
    return counts


def path_report(store: Store, since: float, prefix: bytes) -> dict[str, Any]:
    """Per path under ``prefix``: unique events emitted at ``since`` or later and their p99
    latency (seconds); and the latency percentiles of all of them."""
    seen: set[tuple[bytes, bytes]] = set()
    per_path: dict[bytes, list[float]] = {}
    for at, _, body, path in store.batches:
        if not path.startswith(prefix):
            continue
        readable = _readable(body)
        for event_id, stamp in zip(_ID.findall(readable), _STAMP.findall(readable),
                                   strict=False):
            if float(stamp) < since or (path, event_id) in seen:
                continue
            seen.add((path, event_id))
            per_path.setdefault(path, []).append(at - float(stamp))
    every = sorted(lat for lats in per_path.values() for lat in lats)
    return {
        "paths": {path.decode(): [len(lats), percentile(sorted(lats), 0.99)]
                  for path, lats in per_path.items()},
        "latency": {name: percentile(every, share) for name, share in
                    (("p50", 0.50), ("p99", 0.99), ("max", 1.0))},
    }


def receipts(store: Store, since: float, prefix: bytes) -> dict[str, list[list[float]]]:
    """Per path under ``prefix``: [emit time, receipt time] of the first copy of each
    event emitted at ``since`` or later (for looking at who was late, and when)."""
    seen: set[tuple[bytes, bytes]] = set()
    per_path: dict[str, list[list[float]]] = {}
    for at, _, body, path in store.batches:
        if not path.startswith(prefix):
            continue
        readable = _readable(body)
        for event_id, stamp in zip(_ID.findall(readable), _STAMP.findall(readable),
                                   strict=False):
            if float(stamp) < since or (path, event_id) in seen:
                continue
            seen.add((path, event_id))
            per_path.setdefault(path.decode(), []).append([float(stamp), at])
    return per_path


def _query(path: bytes, name: bytes) -> bytes:
    for pair in path.partition(b"?")[2].split(b"&"):
        key, _, value = pair.partition(b"=")
        if key == name:
            return value
    return b""


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes, bytes] | None:
    """Method, path and (decoded) body of the next request on the connection; None at its
    end."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    request_line, _, header_block = head.partition(b"\r\n")
    method, path, _ = request_line.split(b" ", 2)
    length, gzipped = 0, False
    for line in header_block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"content-encoding":
            gzipped = value.strip().lower() == b"gzip"
    body = await reader.readexactly(length) if length else b""
    return method, path, gzip.decompress(body) if gzipped else body


def _json_response(payload: dict[str, Any]) -> bytes:
    data = json.dumps(payload).encode()
    return (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(data)).encode() + b"\r\n\r\n" + data)


def _handler(store: Store, port: int, delay: float = 0.0, answer: bytes = _OK) -> Any:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (request := await _read_request(reader)) is not None:
                method, path, body = request
                if path == b"/stats":
                    writer.write(_json_response(store.stats()))
                elif path.startswith(b"/report"):
                    since = float(path.partition(b"?since=")[2] or 0)
                    writer.write(_json_response(report(store, since)))
                elif path.startswith(b"/complete?"):
                    writer.write(_json_response(complete(
                        store, _query(path, b"prefix"), int(_query(path, b"min") or 1),
                        float(_query(path, b"after") or 0))))
                elif path.startswith(b"/paths?"):
                    writer.write(_json_response(path_report(
                        store, float(_query(path, b"since") or 0), _query(path, b"prefix"))))
                elif path.startswith(b"/receipts?"):
                    writer.write(_json_response(receipts(
                        store, float(_query(path, b"since") or 0), _query(path, b"prefix"))))
                elif path == b"/reset":
                    store.reset()
                    writer.write(_OK)
                elif method == b"POST":
                    store.add(time.time(), port, body, path)
                    if delay:
                        await asyncio.sleep(delay)
                    writer.write(answer)
                else:
                    writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return handle


async def serve(ports: list[int], delays: dict[int, float] | None = None,
                answer: bytes = _OK) -> None:
    """Serve every port until cancelled; prints ``ready`` once all listen."""
    store = Store()
    delays = delays or {}
    # A deep backlog: thousands of destinations may connect at once.
    servers = [await asyncio.start_server(_handler(store, port, delays.get(port, 0.0), answer),
                                          "127.0.0.1", port, backlog=4096)
               for port in ports]
    print("ready", flush=True)
    try:
        await asyncio.gather(*(server.serve_forever() for server in servers))
    finally:
        for server in servers:
            server.close()


def main(argv: list[str]) -> None:
    kind = "webhook"
    if argv[:1] == ["--answer"]:
        kind, argv = argv[1], argv[2:]
    given = [arg.partition(":") for arg in argv]
    ports = [int(port) for port, _, _ in given]
    if not ports or kind not in ANSWERS:
        raise SystemExit("usage: python -m auditrelay.ops.bench_receiver [--answer KIND] "
                         f"PORT[:DELAY] [...]; KIND one of {', '.join(ANSWERS)}")
    delays = {int(port): float(delay) for port, _, delay in given if delay}
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(ports, delays, ANSWERS[kind]))


if __name__ == "__main__":
    main(sys.argv[1:])
