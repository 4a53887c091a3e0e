"""A clock that moves only when a test moves it, for code that takes an injected clock."""

from __future__ import annotations


class ManualClock:
    """Monotonic seconds, starting at 1000; a test advances ``now`` itself."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ManualSleep:
    """An injected ``sleep`` that notes what it was asked and moves ``clock`` by it."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.slept: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.clock.now += seconds
