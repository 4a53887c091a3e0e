"""Waiting between failed attempts: a delay that doubles up to a ceiling.

The one backoff of the worker, the API's outbox and the Kafka toolkit. Coroutines
``await backoff.wait()``; a thread (``threading.Event.wait``) or a timer
(``loop.call_later``) takes :meth:`Backoff.next` and waits in its own way.
"""

from __future__ import annotations

import asyncio

__all__ = ["Backoff"]


class Backoff:
    """Waits between failed attempts: ``first`` seconds, doubling up to ``most``.

    ``delay`` is the next wait; :meth:`reset` after a success starts over at ``first``.
    """

    def __init__(self, first: float = 0.5, most: float = 30.0) -> None:
        self.first = self.delay = first
        self.most = most

    def reset(self) -> None:
        self.delay = self.first

    def next(self) -> float:
        """The wait now (``delay``); the one after is twice as long, at most ``most``."""
        delay = self.delay
        self.delay = min(delay * 2, self.most)
        return delay

    async def wait(self) -> None:
        await asyncio.sleep(self.next())
