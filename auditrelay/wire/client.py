"""The one HTTP client of auditrelay: SSRF-safe batch delivery (contract sections 2 and 3).

``DeliveryClient`` wraps aiohttp (one ``ClientSession`` for https, one for plain http,
per worker process). Every attempt:

- is checked by ``auditrelay.wire.ssrf`` before any socket exists: the URL is parsed,
  its port checked and the URL re-serialised; at connect time the host name is
  resolved again with the injected resolver (``_PinningResolver``, aiohttp's resolver
  seam, with no DNS cache), every address and the port are checked, and the TCP
  connection goes to a checked address. TLS still sends SNI for, and verifies the
  certificate against, the host name: aiohttp's connector takes ``server_hostname``
  from the URL's host, never from the resolved address. DNS rebinding between
  validation and delivery therefore ends in a refusal, never in a connection;
- starts when the request is sent: it first waits for one of ``max_connections``
  slots, the worker's own queue (back-pressure: the caller waits, nothing is
  dropped, no deadline runs). A request unanswered after ``slow_after_seconds``
  gives its slot back and waits in one of ``max_slow_requests`` slow places, so
  a hundred receivers that take 14 s to answer do not take every slot from the
  healthy ones. The connection pool is as large as slots and slow places, so no
  request ever waits inside it. The wait is never a failed attempt and is not in
  the attempt's latency; a congested worker cannot fail, retry or disable a
  healthy destination. Waiting requests are ``auditrelay_delivery_slot_waiting``;
- has a connect timeout and a deadline for the whole attempt from the moment it
  is sent: connect, send, answer (a timeout per read would let a slow drip last
  forever);
- never follows redirects (a 3xx is a failed attempt);
- reads at most ``response_body_cap_bytes`` of the response, undecoded;
- ignores proxy variables and netrc, and never keeps cookies between attempts.

``post_batch`` never raises for network failures: they come back as
``DeliveryResult.error``, a short text that holds no header, secret, or URL path or
query (the URL may be the credential: errors name ``scheme://host[:port]`` at most).

Why aiohttp (issue #19: at most 0.3 ms of CPU per request, flat from 100 to 10 000
requests in flight), by measurement (``auditrelay bench http``, figures in
docs/scaling.md): httpx 0.28's CPU per request grew with the requests queued in
httpcore's pool (1.2 ms at 100 in flight, 34 ms at 1 000 on a quiet machine; its loop
blocked at 10 000), httpx2 2.16 cost 0.9-1.8 ms, aiohttp 3.14 0.12-0.20 ms, flat. This
client on aiohttp measured 0.18-0.25 ms from 100 to 10 000 in flight.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import socket
import ssl
import sys
import time
import typing
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

import aiohttp
import certifi
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from auditrelay.observability import metrics
from auditrelay.schemas.destinations import url_hint, url_origin
from auditrelay.schemas.errors import InvalidInputError
from auditrelay.wire.ssrf import (
    DEFAULT_DESTINATION_PORTS,
    IPNetwork,
    PortRanges,
    Resolver,
    check_addresses,
    check_port,
    parse_destination_url,
    system_resolver,
)

if typing.TYPE_CHECKING:
    from auditrelay.schemas.settings import Settings

__all__ = ["DeliveryClient", "DeliveryConfig", "DeliveryResult", "Part", "Reply",
           "parse_retry_after", "status_error"]

_MAX_ERROR_CHARS = 300

# httpx logs every request's full URL at INFO, and httpcore its connection steps at
# DEBUG; for Slack, Sumo Logic or Datadog the URL's path or query is the credential.
# Whoever imports the one client gets those loggers at WARNING at least: httpx still runs
# where tests or tools use it, and aiohttp's client, which logs no URL today, stays so.
for _name in ("httpx", "httpcore", "aiohttp.client"):
    _logger = logging.getLogger(_name)
    _logger.setLevel(max(_logger.getEffectiveLevel(), logging.WARNING))
#: Parsed destination URLs kept (the parse is pure; DNS is checked at every connect): as
#: many as a worker has destinations, or every batch parses again.
_PARSED_URLS_KEPT = 65_536
_RETRY_AFTER_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """Knobs of the delivery client; ``from_settings`` maps the operator settings.

    ``request_timeout_seconds`` runs from the moment a request is sent;
    ``max_connections`` requests are in flight at most, the others wait for a slot.
    Idle connections are kept ``keepalive_expiry_seconds``; aiohttp has no separate cap on
    idle ones, so the pool's size (``max_connections + max_slow_requests``) bounds them.
    """

    connect_timeout_seconds: float = 5.0
    request_timeout_seconds: float = 15.0
    response_body_cap_bytes: int = 64 * 1024
    allow_private_cidrs: tuple[IPNetwork, ...] = ()
    allowed_ports: tuple[tuple[int, int], ...] = DEFAULT_DESTINATION_PORTS
    max_connections: int = 100
    #: A request still unanswered after ``slow_after_seconds`` gives its slot back and
    #: waits as one of at most ``max_slow_requests``: slow receivers cannot take every
    #: slot from the others (without a slow place free, it keeps its slot).
    slow_after_seconds: float = 1.0
    max_slow_requests: int = 1000
    keepalive_expiry_seconds: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryConfig:
        return cls(
            connect_timeout_seconds=settings.delivery_connect_timeout_seconds,
            request_timeout_seconds=settings.delivery_request_timeout_seconds,
            response_body_cap_bytes=settings.delivery_response_body_cap_bytes,
            allow_private_cidrs=tuple(settings.allow_private_cidrs),
            allowed_ports=tuple(settings.allowed_destination_ports),
        )


@dataclass(frozen=True, slots=True)
class Part:
    """Some of a batch's events (a JSON array, as a batch's body is) and why they are set
    apart: the ones still to deliver, or the ones the receiver refused for good."""

    body: bytes
    events: int
    detail: str


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """Outcome of one attempt of a batch.

    ``ok``: nothing is left to deliver. ``gone``: stop delivering, disable the
    destination (a webhook's 410, a Slack channel archived...). ``pending``: when not
    ok, the events still to deliver if fewer than all (a receiver took part of the
    batch); None means the whole batch. ``rejected``: events refused for good (the
    receiver answered that they can never be accepted), to dead-letter; with nothing
    pending and every event rejected the whole batch is dead-lettered.
    """

    ok: bool
    status_code: int | None
    latency_ms: int
    error: str | None
    retry_after_seconds: float | None
    gone: bool
    pending: Part | None = None
    rejected: Part | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """What one request got: an answer (``status``, the start of its ``body``) or an
    ``error`` (no answer: refused, timed out, connection failed)."""

    status: int | None
    error: str | None
    retry_after_seconds: float | None
    body: bytes
    latency_ms: int

    def as_result(self) -> DeliveryResult:
        """The reply read as a webhook receiver's (contract section 2)."""
        error = self.error if self.status is None else status_error(self.status)
        return DeliveryResult(
            ok=self.status is not None and 200 <= self.status < 300,
            status_code=self.status, latency_ms=self.latency_ms, error=error,
            retry_after_seconds=self.retry_after_seconds, gone=self.status == 410)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait per a ``Retry-After`` value (delay-seconds or HTTP date), or None.

    A date in the past gives 0; an unparseable value gives None. Clamping to the
    retry schedule is the caller's business.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # HTTP dates are always GMT
    current = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


class _DnsFailure(Exception):
    """The injected resolver failed; not an ``OSError``, so aiohttp passes it through."""

    def __init__(self, host: str) -> None:
        super().__init__(f"DNS resolution of {host} failed")


class _PinningResolver(AbstractResolver):
    """Resolves and checks at connect time; aiohttp connects to what this returns only.

    aiohttp calls it for host names only (an IP literal was checked when the URL was
    parsed); with ``use_dns_cache=False`` it calls it for every new connection.
    """

    def __init__(self, resolver: Resolver, allow: Sequence[IPNetwork], *,
                 require_allowed: bool, ports: PortRanges) -> None:
        self._resolver = resolver
        self._allow = tuple(allow)
        self._require_allowed = require_allowed
        self._ports = tuple(ports)

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        # The URL's port was checked already; the rule holds where connections are made.
        # Raises InvalidInputError, which aiohttp passes through untouched.
        check_port(port, self._ports)
        try:
            resolved = await asyncio.to_thread(self._resolver, host, port)
        except (OSError, UnicodeError) as exc:
            raise _DnsFailure(host) from exc
        checked = check_addresses(resolved, self._allow, host=host,
                                  require_allowed=self._require_allowed)
        # ``hostname`` is informative only: the connector takes SNI and the name the
        # certificate must match from the request's URL.
        return [ResolveResult(hostname=host, host=str(address), port=port,
                              family=socket.AF_INET6 if address.version == 6
                              else socket.AF_INET,
                              proto=socket.IPPROTO_TCP,
                              flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV)
                for address in checked]

    async def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class _Target:
    """A checked destination URL, as aiohttp is handed it (parsed once, never re-quoted)."""

    url: URL
    text: str
    plain: bool


# Sub-delimiters and what a path or query may hold unescaped (RFC 3986); anything else,
# non-ASCII included, is percent-encoded once, and escapes already there are kept.
_URL_SAFE = "!$&'()*+,;=:/?@[]%"
# CPython before 3.12.8 leaks aborted TLS transports unless aiohttp cleans them up;
# aiohttp warns if asked where that is fixed.
_CLEANUP_CLOSED = (3, 13, 0) <= sys.version_info < (3, 13, 1) or sys.version_info < (3, 12, 8)
# Only what the contract's headers and the request itself need: aiohttp would add its
# own User-Agent, a Content-Type and an Accept-Encoding for compressed answers.
_SKIP_AUTO_HEADERS = ("User-Agent", "Content-Type")
# The body is read raw and capped; a compressed one is of no use.
_SESSION_HEADERS = {"Accept-Encoding": "identity"}


class DeliveryClient:
    """One per worker process; ``async with`` it or call ``aclose``.

    ``socket_factory`` (tests) makes the socket for each connection, given the checked
    address it will be connected to.
    """

    def __init__(
        self,
        config: DeliveryConfig | None = None,
        *,
        resolver: Resolver = system_resolver,
        ssl_context: ssl.SSLContext | None = None,
        socket_factory: aiohttp.SocketFactoryType | None = None,
    ) -> None:
        self._config = config if config is not None else DeliveryConfig()
        self._resolver = resolver
        self._ssl_context = ssl_context if ssl_context is not None \
            else ssl.create_default_context(cafile=certifi.where())
        self._socket_factory = socket_factory
        self._parsed: dict[str, _Target] = {}
        # Made inside the running loop, on first use: aiohttp binds them to it.
        self._sessions: dict[bool, aiohttp.ClientSession] = {}
        # One for both sessions: the requests in flight never outnumber either pool.
        self._slots = asyncio.Semaphore(self._config.max_connections)
        self._slow_free = self._config.max_slow_requests

    def __repr__(self) -> str:
        return f"DeliveryClient({self._config!r})"

    async def __aenter__(self) -> DeliveryClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()

    async def post_batch(
        self, url: str, body: bytes,
        headers: Mapping[str, str] | Callable[[], Mapping[str, str]],
    ) -> DeliveryResult:
        """POST ``body`` to ``url`` once and read the answer as a webhook receiver's
        (2xx delivered, 410 gone, anything else failed); never raises for a network or
        policy failure. See :meth:`request` for ``headers``."""
        return (await self.request(url, body, headers)).as_result()

    async def request(
        self, url: str, body: bytes,
        headers: Mapping[str, str] | Callable[[], Mapping[str, str]],
    ) -> Reply:
        """POST ``body`` to ``url`` once: the status, ``Retry-After`` and the first
        ``response_body_cap_bytes`` of the answer, or the error; never raises for a
        network or policy failure.

        ``headers`` may be a function, called once a connection slot is free: a request
        signed with a timestamp is then signed when it is sent, not before its wait.
        """
        started = time.perf_counter()

        def reply(*, status: int | None = None, error: str | None = None,
                  retry_after: float | None = None, content: bytes = b"") -> Reply:
            return Reply(status=status, error=error, retry_after_seconds=retry_after,
                         body=content,
                         latency_ms=round((time.perf_counter() - started) * 1000))

        try:
            target = self._checked_url(url)
        except InvalidInputError as exc:
            return reply(error=f"refused: {exc}")
        deadline = self._config.request_timeout_seconds
        async with self._slot():
            # The attempt, its deadline and its latency start here, once it can be sent.
            started = time.perf_counter()
            sent_headers = headers() if callable(headers) else headers
            session = self._session(plain=target.plain)
            try:
                async with asyncio.timeout(deadline):
                    async with session.post(target.url, data=body, headers=sent_headers,
                                            allow_redirects=False) as response:
                        status = response.status
                        retry_header = response.headers.get("Retry-After")
                        content = await self._read_capped(response)
            except aiohttp.ConnectionTimeoutError:
                # Before the bare TimeoutError: aiohttp's connect timeout is one too.
                connect = self._config.connect_timeout_seconds
                return reply(error=f"ConnectTimeout: no connection to "
                                   f"{url_origin(target.text)} within {connect:g} s")
            except TimeoutError:
                return reply(error=f"timed out: no complete answer within {deadline:g} s")
            except InvalidInputError as exc:
                return reply(error=f"refused before connecting: {exc}")
            except _DnsFailure as exc:
                return reply(error=f"ConnectError: {exc}")
            except (aiohttp.ClientError, OSError) as exc:
                return reply(error=_describe(exc, (url, target.text),
                                             fallback="connection failed"))
        retry_after = parse_retry_after(retry_header) if status in _RETRY_AFTER_STATUSES \
            else None
        return reply(status=status, retry_after=retry_after, content=content)

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """One of ``max_connections`` slots, awaited without a deadline (back-pressure);
        given back early, for a slow place, if the request is still in flight after
        ``slow_after_seconds``."""
        with metrics.waiting_for_slot():
            await self._slots.acquire()
        slow = False

        def demote() -> None:
            nonlocal slow
            if self._slow_free > 0:
                self._slow_free -= 1
                slow = True
                self._slots.release()

        timer = asyncio.get_running_loop().call_later(self._config.slow_after_seconds, demote)
        try:
            yield
        finally:
            # Released once the response is closed: its connection is back in the pool.
            timer.cancel()
            if slow:
                self._slow_free += 1
            else:
                self._slots.release()

    def _checked_url(self, url: str) -> _Target:
        """``url`` re-serialised after every check that needs no DNS (remembered: pure)."""
        target = self._parsed.get(url)
        if target is None:
            parsed = parse_destination_url(
                url, allow_private_cidrs=self._config.allow_private_cidrs
            )
            # Here too for IP literals: aiohttp asks no resolver about those.
            check_port(parsed.port, self._config.allowed_ports)
            text = parsed.url
            # Encoded: what the parser accepted is sent as it is, not re-quoted by yarl.
            target = _Target(URL(quote(text, safe=_URL_SAFE), encoded=True), text,
                             plain=parsed.scheme == "http")
            if len(self._parsed) >= _PARSED_URLS_KEPT:
                self._parsed.clear()
            self._parsed[url] = target
        return target

    def _session(self, *, plain: bool) -> aiohttp.ClientSession:
        session = self._sessions.get(plain)
        if session is None:
            config = self._config
            connector = aiohttp.TCPConnector(
                # As large as the slots and the slow places: a request holding either
                # finds a free or idle connection.
                limit=config.max_connections + config.max_slow_requests,
                limit_per_host=0,
                keepalive_timeout=config.keepalive_expiry_seconds,
                # Resolved and checked for every new connection, never remembered.
                use_dns_cache=False,
                # Plain http only ever reaches addresses inside the allowed CIDRs.
                resolver=_PinningResolver(self._resolver, config.allow_private_cidrs,
                                          require_allowed=plain,
                                          ports=config.allowed_ports),
                ssl=self._ssl_context,
                enable_cleanup_closed=_CLEANUP_CLOSED,
                socket_factory=self._socket_factory,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                # The whole attempt's deadline is post_batch's own, started with the send.
                timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_read=None,
                                              sock_connect=config.connect_timeout_seconds),
                headers=_SESSION_HEADERS,
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                auto_decompress=False,
                raise_for_status=False,
            )
            self._sessions[plain] = session
        return session

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        # Raw bytes: decoding could turn a small compressed body into a huge one.
        cap = self._config.response_body_cap_bytes
        chunks: list[bytes] = []
        read = 0
        while read < cap:
            chunk = await response.content.read(cap - read)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            read += len(chunk)
        if not response.content.at_eof():
            response.close()  # hang up: the rest is never read, the connection not reused
        return b"".join(chunks)


def status_error(status: int) -> str | None:
    """What a webhook receiver's answer ``status`` means as an attempt's error, if any."""
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return f"HTTP {status}: redirect not followed"
    if status == 410:
        return "HTTP 410 Gone: the receiver asks to stop deliveries"
    return f"HTTP {status}"


def _kind_and_detail(exc: BaseException) -> tuple[str, str]:
    """A short name for what failed and aiohttp's detail, without its connection key.

    The names are the ones attempt records carried before aiohttp (ConnectError,
    RemoteProtocolError...): operators' searches and alerts keep working.
    """
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return "ConnectError", str(exc.certificate_error)
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if os_error.errno is not None:
            return "ConnectError", os.strerror(os_error.errno)
        return "ConnectError", str(os_error)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "RemoteProtocolError", "server disconnected without a complete answer"
    if isinstance(exc, aiohttp.ClientResponseError):
        if exc.message.startswith("Bad status line"):
            # Most often stray bytes after a complete answer: a 204 or 304 sent with a
            # body, which HTTP forbids; the parser then meets them where a status is due.
            return "RemoteProtocolError", (
                "the receiver's answer is not valid HTTP/1.1 (a body on a 204 or 304 "
                f"answer, or not HTTP at all): {exc.message}")
        return "RemoteProtocolError", exc.message
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "RemoteProtocolError", str(exc)
    if isinstance(exc, aiohttp.ClientOSError) and exc.errno is not None:
        return "NetworkError", os.strerror(exc.errno)
    return type(exc).__name__, str(exc)


def _describe(exc: BaseException, urls: Sequence[str], *, fallback: str) -> str:
    name, detail = _kind_and_detail(exc)
    detail = detail.strip()
    for url in urls:
        # A URL's path or query may be the credential (Slack, Sumo Logic): an error, which
        # ends up in logs, statuses and attempt records, names its origin at most.
        detail = detail.replace(url, url_hint(url))
        path = url.partition("://")[2].lstrip("/")
        path = path[next((i for i, c in enumerate(path) if c in "/?"), len(path)):]
        if path not in ("", "/"):
            detail = detail.replace(path, "/\u2026")
    text = f"{name}: {detail}" if detail else f"{name}: {fallback}"
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."
