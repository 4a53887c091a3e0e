"""The retry schedule of contract section 2, as pure arithmetic.

Attempt ``n`` is the n-th delivery attempt of a batch (1 is the first, made by
the delivery agent). After failed attempt ``n`` the batch waits
``waits[n-1]`` seconds (the last wait repeats), with ±``jitter`` so that many
batches failing together do not come back together, and lives meanwhile in the
retry tier topic ``RETRY_TIERS[n-1]`` (the last tier repeats too). A
``Retry-After`` from the receiver replaces the scheduled wait, clamped to the
schedule's range. Once ``give_up_seconds`` have passed since the first attempt,
a further failure dead-letters the batch.

Randomness comes from an injected ``random.Random``, so tests are exact.
"""

from __future__ import annotations

import random
import typing
from dataclasses import dataclass

from auditrelay.schemas.topics import RETRY_TIERS

if typing.TYPE_CHECKING:
    from auditrelay.schemas.settings import Settings

__all__ = ["RetrySchedule"]


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Waits between attempts, their jitter, and when to give up."""

    waits: tuple[float, ...] = (10, 60, 300, 1800, 7200, 18000, 36000)
    jitter: float = 0.2
    give_up_seconds: float = 72 * 3600

    def __post_init__(self) -> None:
        if not self.waits or any(w <= 0 for w in self.waits):
            raise ValueError("a retry schedule needs at least one wait, each above 0")
        if not 0 <= self.jitter < 1:
            raise ValueError("retry jitter must be in [0, 1)")
        if self.give_up_seconds <= 0:
            raise ValueError("give_up_seconds must be above 0")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetrySchedule:
        return cls(tuple(settings.retry_schedule_seconds), settings.retry_jitter,
                   settings.retry_give_up_seconds)

    @property
    def shortest(self) -> float:
        return min(self.waits)

    @property
    def longest(self) -> float:
        return max(self.waits)

    def base_wait(self, attempt: int) -> float:
        """The scheduled wait after failed attempt ``attempt`` (1-based), before jitter."""
        _check_attempt(attempt)
        return self.waits[min(attempt, len(self.waits)) - 1]

    def tier(self, attempt: int) -> str:
        """The retry tier topic suffix a batch waits in after failed attempt ``attempt``."""
        _check_attempt(attempt)
        return RETRY_TIERS[min(attempt, len(RETRY_TIERS)) - 1]

    def wait(self, attempt: int, rng: random.Random,
             retry_after: float | None = None) -> float:
        """Seconds until the next attempt after failed attempt ``attempt``.

        ``retry_after`` (the receiver's ``Retry-After``) wins over the schedule,
        clamped to the schedule's range, and is not jittered: it is the receiver's
        explicit request.
        """
        if retry_after is not None:
            return self.clamp_retry_after(retry_after)
        base = self.base_wait(attempt)
        if self.jitter == 0:
            return base
        return base * rng.uniform(1 - self.jitter, 1 + self.jitter)

    def clamp_retry_after(self, seconds: float) -> float:
        return min(max(seconds, self.shortest), self.longest)

    def due_ms(self, now_ms: int, attempt: int, rng: random.Random,
               retry_after: float | None = None) -> int:
        """Unix milliseconds at which the attempt after ``attempt`` is due."""
        return now_ms + round(self.wait(attempt, rng, retry_after) * 1000)

    def exhausted(self, first_attempt_ms: int, now_ms: int) -> bool:
        """True once ``give_up_seconds`` have passed since the first attempt."""
        return now_ms - first_attempt_ms >= self.give_up_seconds * 1000


def _check_attempt(attempt: int) -> None:
    if attempt < 1:
        raise ValueError(f"attempts count from 1, got {attempt}")
