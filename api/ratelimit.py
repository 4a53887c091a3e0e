"""The API's rate limits: test sends, and failed authentications, kept in this process.

Two pure limiters, each with an injected clock (monotonic seconds) and bounded memory:
at ``max_keys`` keys the one least recently used is forgotten, so that a caller
rotating addresses (or naming made-up workspaces) cannot grow memory without bound.

- ``SlidingWindow``: at most ``limit`` events per ``window`` seconds for each key.
- ``FailureBackoff``: after ``threshold`` failures within a window, a key waits, for
  twice as long after each further failure, up to ``cap``.

``ApiLimits`` is the set one API process applies (``app.state.limits``, built by
``create_app``), with the policy of docs/api.md: which keys, in which order, and the
metrics ``auditrelay_api_auth_failures_total`` and ``auditrelay_api_rate_limited_total``.
Each process counts alone: with several API replicas a caller gets up to that many
times the limits (the destination quota is in the database and holds whatever the
number of replicas).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from starlette.requests import HTTPConnection

from auditrelay.observability import metrics
from auditrelay.schemas.errors import RateLimitedError
from auditrelay.schemas.settings import Settings

__all__ = [
    "DEFAULT_MAX_KEYS",
    "ApiLimits",
    "Clock",
    "FailureBackoff",
    "SlidingWindow",
    "client_address",
    "retry_after_header",
]

#: Monotonic seconds.
Clock = Callable[[], float]
#: Keys one limiter remembers; each costs well under a kilobyte.
DEFAULT_MAX_KEYS = 10_000
#: Failed authentications are counted over this many seconds.
AUTH_WINDOW_SECONDS = 60.0

V = TypeVar("V")


class _Keys(Generic[V]):
    """A map of at most ``max_keys`` entries; a new key beyond that evicts the least
    recently used one."""

    def __init__(self, max_keys: int) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self._items: OrderedDict[str, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.max_keys:
            self._items.popitem(last=False)

    def pop(self, key: str) -> None:
        self._items.pop(key, None)


class SlidingWindow:
    """At most ``limit`` events per ``window`` seconds for each key (a log of their times)."""

    def __init__(self, limit: int, window: float, *, clock: Clock = time.monotonic,
                 max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if limit < 1 or window < 0:
            raise ValueError("a window needs limit >= 1 and window >= 0")
        self.limit = limit
        self.window = window
        self.clock = clock
        self._keys: _Keys[deque[float]] = _Keys(max_keys)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._keys)

    def wait(self, key: str) -> float:
        """Seconds until ``key`` may have one more event; 0 when it may now."""
        with self._lock:
            times = self._recent(key, self.clock())
            if times is None or len(times) < self.limit:
                return 0.0
            return max(0.0, times[0] + self.window - self.clock())

    def hit(self, key: str) -> None:
        """Record one event of ``key`` now (whether or not ``wait`` allowed it)."""
        with self._lock:
            now = self.clock()
            times = self._recent(key, now)
            if times is None:
                times = deque(maxlen=self.limit)
                self._keys.put(key, times)
            times.append(now)

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._keys.get(key)
        if times is not None:
            while times and times[0] <= now - self.window:
                times.popleft()
        return times


@dataclass(slots=True)
class _Failures:
    recent: deque[float]
    level: int = 0
    locked_until: float = 0.0


class FailureBackoff:
    """Slows down a key that keeps failing.

    Once ``threshold`` failures fell within ``window`` seconds the key is refused for
    ``base`` seconds; after the refusal, every further failure refuses it for twice as
    long as the one before, up to ``cap``. A key is forgotten, and starts afresh, once
    ``cap`` seconds passed after its last refusal ended without a failure. A success is
    not the limiter's business: nothing clears a key but time.
    """

    def __init__(self, threshold: int, window: float, *, base: float, cap: float,
                 clock: Clock = time.monotonic, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if threshold < 1 or window <= 0 or base <= 0 or cap < base:
            raise ValueError("a backoff needs threshold >= 1, window > 0, 0 < base <= cap")
        self.threshold = threshold
        self.window = window
        self.base = base
        self.cap = cap
        self.clock = clock
        self._keys: _Keys[_Failures] = _Keys(max_keys)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._keys)

    def wait(self, key: str) -> float:
        """Seconds ``key`` must still wait; 0 when it may try now."""
        with self._lock:
            now = self.clock()
            state = self._state(key, now)
            return max(0.0, state.locked_until - now) if state is not None else 0.0

    def suspect(self, key: str) -> bool:
        """Whether ``key`` failed within the window, or is being slowed down."""
        with self._lock:
            now = self.clock()
            state = self._state(key, now)
            return state is not None and (state.level > 0 or bool(state.recent))

    def failure(self, key: str) -> float:
        """Record a failure of ``key`` now; the seconds it must wait from now on."""
        with self._lock:
            now = self.clock()
            state = self._state(key, now)
            if state is None:
                state = _Failures(deque(maxlen=self.threshold))
                self._keys.put(key, state)
            state.recent.append(now)
            if state.level > 0 or len(state.recent) >= self.threshold:
                state.level += 1
                # min() first: 2 ** level of a long-lived attacker must not overflow.
                exponent = min(state.level - 1, 64)
                state.locked_until = now + min(self.cap, self.base * 2.0 ** exponent)
            return max(0.0, state.locked_until - now)

    def _state(self, key: str, now: float) -> _Failures | None:
        state = self._keys.get(key)
        if state is None:
            return None
        while state.recent and state.recent[0] <= now - self.window:
            state.recent.popleft()
        if state.level > 0 and now >= state.locked_until + self.cap:
            state.level = 0  # quiet for long enough: forgiven
        if state.level == 0 and not state.recent:
            self._keys.pop(key)
            return None
        return state


def retry_after_header(seconds: float) -> str:
    """``Retry-After``'s whole seconds, rounded up (never 0: the wait is not over)."""
    return str(max(1, math.ceil(seconds)))


def client_address(connection: HTTPConnection) -> str:
    """The peer's address as the server saw it: behind a reverse proxy, the proxy's,
    unless the server is told to trust its forwarding headers (docs/api.md)."""
    return connection.client.host if connection.client is not None else "unknown"


def _wait_text(seconds: float) -> str:
    return f"try again in {retry_after_header(seconds)} s"


@dataclass
class ApiLimits:
    """The limits one API process applies; ``from_settings`` builds the configured ones."""

    test_send_destination: SlidingWindow
    test_send_workspace: SlidingWindow
    auth_address: FailureBackoff
    auth_workspace: FailureBackoff
    #: A test send checks two windows, then records in both: one step for everyone.
    _sends: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock = time.monotonic,
                      max_keys: int = DEFAULT_MAX_KEYS) -> ApiLimits:
        def backoff() -> FailureBackoff:
            return FailureBackoff(settings.auth_failures_per_minute, AUTH_WINDOW_SECONDS,
                                  base=min(AUTH_WINDOW_SECONDS, settings.auth_lockout_max_seconds),
                                  cap=settings.auth_lockout_max_seconds, clock=clock,
                                  max_keys=max_keys)

        return cls(
            test_send_destination=SlidingWindow(1, settings.test_send_interval_seconds,
                                                clock=clock, max_keys=max_keys),
            test_send_workspace=SlidingWindow(settings.test_send_workspace_per_minute, 60.0,
                                              clock=clock, max_keys=max_keys),
            auth_address=backoff(), auth_workspace=backoff())

    # -- authentication -------------------------------------------------------------------

    def check_authentication(self, address: str, workspace: str | None) -> None:
        """Refuse (429) an attempt to authenticate that must wait, before any token is
        looked at: otherwise guessing would go on behind the refusals.

        The workspace's count holds back only addresses that failed lately themselves: a
        stranger's failures must not lock a workspace's own clients out.
        """
        wait = self.auth_address.wait(address)
        if wait > 0:
            metrics.count_rate_limited("auth_address")
            raise RateLimitedError(
                f"too many failed authentications from this address; {_wait_text(wait)}",
                retry_after=wait)
        if workspace is None or not self.auth_address.suspect(address):
            return
        wait = self.auth_workspace.wait(workspace)
        if wait > 0:
            metrics.count_rate_limited("auth_workspace")
            raise RateLimitedError(
                f"too many failed authentications for workspace {workspace}; "
                f"{_wait_text(wait)}", retry_after=wait)

    def failed_authentication(self, address: str, workspace: str | None, *, via: str) -> None:
        """Count a refused token (``via``: ``bearer`` or ``sign_in``)."""
        metrics.count_auth_failure(via)
        self.auth_address.failure(address)
        if workspace is not None:
            self.auth_workspace.failure(workspace)

    # -- test sends -----------------------------------------------------------------------

    def take_test_send(self, workspace: str, destination: str) -> None:
        """Allow one test send to ``destination`` of ``workspace``, or refuse it (429)."""
        with self._sends:
            wait = self.test_send_destination.wait(destination)
            if wait > 0:
                metrics.count_rate_limited("test_send_destination")
                raise RateLimitedError(
                    f"a test was sent to {destination} moments ago; {_wait_text(wait)}",
                    retry_after=wait)
            wait = self.test_send_workspace.wait(workspace)
            if wait > 0:
                metrics.count_rate_limited("test_send_workspace")
                raise RateLimitedError(
                    f"workspace {workspace} sent {self.test_send_workspace.limit} tests in "
                    f"the last minute, the most it may; {_wait_text(wait)}", retry_after=wait)
            self.test_send_destination.hit(destination)
            self.test_send_workspace.hit(workspace)
