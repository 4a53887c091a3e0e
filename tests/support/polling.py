"""Waiting in tests: poll a condition until it holds, or fail at a deadline.

- ``wait_until``: blocking code (a thread, a subprocess, the broker).
- ``wait_quiet``: until a count (requests a receiver got) stops changing for a while,
  so that a late duplicate or foreign request would be seen.
- ``eventually``: its twin for a test running in the event loop.
- ``within_turns``: for unit tests of asyncio code, event-loop turns and no clock at
  all, so that the outcome never depends on how fast the machine is.

Each fails with ``AssertionError("not within … : {what}")``; ``what`` may be a callable,
called only then, that builds the message (a worker's log tail, counts so far).
A predicate may itself raise to fail at once (a process that died).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["Message", "eventually", "wait_quiet", "wait_until", "within_turns"]

#: The failure message, or a function building it when the deadline has passed.
Message = str | Callable[[], str]


def _text(what: Message) -> str:
    return what() if callable(what) else what


def wait_until(predicate: Callable[[], bool], timeout: float, what: Message = "the condition",
               *, interval: float = 0.05) -> float:
    """Poll ``predicate`` every ``interval`` s until it holds; returns when (monotonic)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {_text(what)}")
        time.sleep(interval)
    return time.monotonic()


def wait_quiet(count: Callable[[], int], seconds: float, timeout: float = 30.0,
               what: Message = "it kept receiving", *, interval: float = 0.1) -> float:
    """Poll ``count`` until it has not changed for ``seconds``; returns when (monotonic)."""
    last = [-1]
    since = [time.monotonic()]

    def quiet() -> bool:
        now = count()
        if now != last[0]:
            last[0], since[0] = now, time.monotonic()
        return time.monotonic() - since[0] >= seconds

    return wait_until(quiet, timeout, what, interval=interval)


async def eventually(predicate: Callable[[], bool], timeout: float,
                     what: Message = "the condition", *, interval: float = 0.02) -> float:
    """``wait_until`` without blocking the event loop; returns when (monotonic)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {_text(what)}")
        await asyncio.sleep(interval)
    return time.monotonic()


async def within_turns(predicate: Callable[[], bool], what: Message = "the condition",
                       *, turns: int = 1000) -> None:
    """Let every ready task run until ``predicate`` holds, at most ``turns`` loop turns."""
    for _ in range(turns):
        if predicate():
            return
        await asyncio.sleep(0)
    if not predicate():
        raise AssertionError(f"not within {turns} event-loop turns: {_text(what)}")
