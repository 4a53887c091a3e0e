"""The one HTTP client of auditrelay: SSRF-safe batch delivery (contract sections 2 and 3).

``DeliveryClient`` wraps one ``httpx.AsyncClient`` per worker process. Every
attempt:

- is checked by ``auditrelay.wire.ssrf`` before any socket exists: the URL is parsed
  and re-serialised, and at connect time the host name is resolved again with
  the injected resolver, every address and the port are checked, and the TCP
  connection goes to a checked address. TLS still sends SNI for, and verifies the certificate
  against, the host name, because httpcore takes ``server_hostname`` from the
  URL, not from the address connected to. DNS rebinding between validation and
  delivery therefore ends in a refusal, never in a connection;
- starts when the request is sent: it first waits for one of ``max_connections``
  slots, the worker's own queue (back-pressure: the caller waits, nothing is
  dropped, no deadline runs), and the connection pool is as large as that, so no
  request ever waits inside it. The wait is never a failed attempt and is not in
  the attempt's latency; a congested worker cannot fail, retry or disable a
  healthy destination. Waiting requests are ``auditrelay_delivery_slot_waiting``;
- has a connect timeout and a deadline for the whole attempt from the moment it
  is sent: connect, send, answer (httpx's own timeouts are per operation, so a
  slow drip could otherwise last forever);
- never follows redirects (a 3xx is a failed attempt);
- reads at most ``response_body_cap_bytes`` of the response, undecoded;
- ignores proxy variables and never keeps cookies between attempts.

``post_batch`` never raises for network failures: they come back as
``DeliveryResult.error``, a short text that holds no header, secret, or URL path or
query (the URL may be the credential: errors name ``scheme://host[:port]`` at most).

httpx 0.28 has no public way to hand httpcore a network backend, so
``_PinnedTransport`` replaces the connection pool that ``AsyncHTTPTransport``
builds with an identical one that has the pinning backend; it fails at
construction if httpx ever changes that layout.
"""

from __future__ import annotations

import asyncio
import email.utils
import http.cookiejar
import ipaddress
import logging
import ssl
import time
import typing
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import httpcore
import httpx

from auditrelay.observability import metrics
from auditrelay.schemas.destinations import url_hint
from auditrelay.schemas.errors import InvalidInputError
from auditrelay.wire.ssrf import (
    DEFAULT_DESTINATION_PORTS,
    IPAddress,
    IPNetwork,
    Resolver,
    check_addresses,
    check_port,
    parse_destination_url,
    system_resolver,
)

if typing.TYPE_CHECKING:
    from auditrelay.schemas.settings import Settings

__all__ = ["DeliveryClient", "DeliveryConfig", "DeliveryResult", "parse_retry_after"]

_MAX_ERROR_CHARS = 300

# httpx logs every request's full URL at INFO, and httpcore its connection steps at
# DEBUG; for Slack, Sumo Logic or Datadog the URL's path or query is the credential.
# Whoever imports the one client gets those loggers at WARNING at least.
for _name in ("httpx", "httpcore"):
    _logger = logging.getLogger(_name)
    _logger.setLevel(max(_logger.getEffectiveLevel(), logging.WARNING))
#: Parsed destination URLs kept (the parse is pure; DNS is checked at every connect).
_PARSED_URLS_KEPT = 4096
_RETRY_AFTER_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """Knobs of the delivery client; ``from_settings`` maps the operator settings.

    ``request_timeout_seconds`` runs from the moment a request is sent;
    ``max_connections`` requests are in flight at most, the others wait for a slot.
    """

    connect_timeout_seconds: float = 5.0
    request_timeout_seconds: float = 15.0
    response_body_cap_bytes: int = 64 * 1024
    allow_private_cidrs: tuple[IPNetwork, ...] = ()
    allowed_ports: tuple[tuple[int, int], ...] = DEFAULT_DESTINATION_PORTS
    max_connections: int = 100
    max_keepalive_connections: int = 20
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
class DeliveryResult:
    """Outcome of one attempt. ``ok``: 2xx. ``gone``: 410, disable the destination."""

    ok: bool
    status_code: int | None
    latency_ms: int
    error: str | None
    retry_after_seconds: float | None
    gone: bool


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


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Resolves and checks at connect time, then connects to a checked address."""

    def __init__(
        self,
        inner: httpcore.AsyncNetworkBackend,
        resolver: Resolver,
        allow: Sequence[IPNetwork],
        *,
        require_allowed: bool,
        ports: Sequence[tuple[int, int]] = DEFAULT_DESTINATION_PORTS,
    ) -> None:
        self._inner = inner
        self._resolver = resolver
        self._allow = tuple(allow)
        self._require_allowed = require_allowed
        self._ports = tuple(ports)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        # A config record may carry a URL stored before the port rule, or written by hand:
        # the rule holds where the connection is made. Raises InvalidInputError.
        check_port(port, self._ports)
        literal: IPAddress | None
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            resolved: Sequence[IPAddress] = (literal,)
        else:
            try:
                resolved = await asyncio.to_thread(self._resolver, host, port)
            except (OSError, UnicodeError) as exc:
                raise httpcore.ConnectError(f"DNS resolution of {host} failed") from exc
        # Raises InvalidInputError, which httpx passes through untouched.
        checked = check_addresses(
            resolved,
            self._allow,
            host=None if literal is not None else host,
            require_allowed=self._require_allowed,
        )
        failure: Exception | None = None
        for address in checked:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # check_addresses never returns an empty tuple
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not a delivery destination")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _PinnedTransport(httpx.AsyncHTTPTransport):
    def __init__(
        self, *, ssl_context: ssl.SSLContext, limits: httpx.Limits, backend: _PinnedBackend
    ) -> None:
        super().__init__(verify=ssl_context, trust_env=False, limits=limits, retries=0)
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            raise RuntimeError(
                "httpx.AsyncHTTPTransport no longer keeps its pool in _pool; "
                "auditrelay.wire.client must be adapted before delivering"
            )
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            retries=0,
            network_backend=backend,
        )


def _no_cookie_jar() -> http.cookiejar.CookieJar:
    # An empty allow-list admits no domain: cookies set by one destination must
    # never travel to another workspace's destination on the same host.
    return http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


class DeliveryClient:
    """One per worker process; ``async with`` it or call ``aclose``."""

    def __init__(
        self,
        config: DeliveryConfig | None = None,
        *,
        resolver: Resolver = system_resolver,
        ssl_context: ssl.SSLContext | None = None,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._config = config if config is not None else DeliveryConfig()
        self._parsed: dict[str, str] = {}
        # One for both transports: the requests in flight never outnumber either pool.
        self._slots = asyncio.Semaphore(self._config.max_connections)
        allow = self._config.allow_private_cidrs
        context = ssl_context if ssl_context is not None else httpx.create_ssl_context(
            trust_env=False
        )
        inner = network_backend if network_backend is not None else httpcore.AnyIOBackend()
        # As large as the slots: a request holding a slot finds a free or idle connection.
        limits = httpx.Limits(
            max_connections=self._config.max_connections,
            max_keepalive_connections=self._config.max_keepalive_connections,
            keepalive_expiry=self._config.keepalive_expiry_seconds,
        )

        def transport(*, plain: bool) -> _PinnedTransport:
            backend = _PinnedBackend(inner, resolver, allow, require_allowed=plain,
                                     ports=self._config.allowed_ports)
            return _PinnedTransport(ssl_context=context, limits=limits, backend=backend)

        self._client = httpx.AsyncClient(
            transport=transport(plain=False),
            # Plain http only ever reaches addresses inside the allowed CIDRs.
            mounts={"http://": transport(plain=True)},
            follow_redirects=False,
            trust_env=False,
            cookies=_no_cookie_jar(),
            timeout=httpx.Timeout(
                self._config.request_timeout_seconds,
                connect=self._config.connect_timeout_seconds,
            ),
            # The body is read raw and capped; a compressed one is of no use.
            headers={"Accept-Encoding": "identity"},
        )

    def __repr__(self) -> str:
        return f"DeliveryClient({self._config!r})"

    async def __aenter__(self) -> DeliveryClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def post_batch(
        self, url: str, body: bytes,
        headers: Mapping[str, str] | Callable[[], Mapping[str, str]],
    ) -> DeliveryResult:
        """POST ``body`` to ``url`` once; never raises for a network or policy failure.

        ``headers`` may be a function, called once a connection slot is free: a request
        signed with a timestamp is then signed when it is sent, not before its wait.
        """
        started = time.perf_counter()

        def result(
            *, status: int | None = None, error: str | None = None,
            retry_after: float | None = None,
        ) -> DeliveryResult:
            return DeliveryResult(
                ok=status is not None and 200 <= status < 300 and error is None,
                status_code=status,
                latency_ms=round((time.perf_counter() - started) * 1000),
                error=error,
                retry_after_seconds=retry_after,
                gone=status == 410,
            )

        try:
            target = self._checked_url(url)
        except InvalidInputError as exc:
            return result(error=f"refused: {exc}")
        deadline = self._config.request_timeout_seconds
        async with self._slot():
            # The attempt, its deadline and its latency start here, once it can be sent.
            started = time.perf_counter()
            sent_headers = headers() if callable(headers) else headers
            try:
                async with asyncio.timeout(deadline):
                    async with self._client.stream(
                        "POST", target, content=body, headers=sent_headers
                    ) as response:
                        await self._read_capped(response)
            except TimeoutError:
                return result(error=f"timed out: no complete answer within {deadline:g} s")
            except InvalidInputError as exc:
                return result(error=f"refused before connecting: {exc}")
            except httpx.TimeoutException as exc:
                return result(error=_describe(exc, (url, target), fallback="timed out"))
            except (httpx.HTTPError, OSError) as exc:
                return result(error=_describe(exc, (url, target), fallback="connection failed"))
        status = response.status_code
        retry_after = (
            parse_retry_after(response.headers.get("Retry-After"))
            if status in _RETRY_AFTER_STATUSES
            else None
        )
        return result(status=status, error=_status_error(status), retry_after=retry_after)

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """One of ``max_connections`` slots, awaited without a deadline (back-pressure)."""
        with metrics.waiting_for_slot():
            await self._slots.acquire()
        try:
            yield
        finally:
            # Released once the response is closed: its connection is back in the pool.
            self._slots.release()

    def _checked_url(self, url: str) -> str:
        """``url`` re-serialised after every check that needs no DNS (remembered: pure)."""
        target = self._parsed.get(url)
        if target is None:
            target = parse_destination_url(
                url, allow_private_cidrs=self._config.allow_private_cidrs
            ).url
            if len(self._parsed) >= _PARSED_URLS_KEPT:
                self._parsed.clear()
            self._parsed[url] = target
        return target

    async def _read_capped(self, response: httpx.Response) -> int:
        # Raw bytes: decoding could turn a small compressed body into a huge one.
        cap = self._config.response_body_cap_bytes
        read = 0
        if cap <= 0:
            return read
        async for chunk in response.aiter_raw():
            read += len(chunk)
            if read >= cap:
                break  # leaving the stream unread closes the connection
        return read


def _status_error(status: int) -> str | None:
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return f"HTTP {status}: redirect not followed"
    if status == 410:
        return "HTTP 410 Gone: the receiver asks to stop deliveries"
    return f"HTTP {status}"


def _describe(exc: BaseException, urls: Sequence[str], *, fallback: str) -> str:
    detail = str(exc).strip()
    for url in urls:
        # A URL's path or query may be the credential (Slack, Sumo Logic): an error, which
        # ends up in logs, statuses and attempt records, names its origin at most.
        detail = detail.replace(url, url_hint(url))
        path = url.partition("://")[2].lstrip("/")
        path = path[next((i for i, c in enumerate(path) if c in "/?"), len(path)):]
        if path not in ("", "/"):
            detail = detail.replace(path, "/\u2026")
    text = f"{type(exc).__name__}: {detail}" if detail else f"{type(exc).__name__}: {fallback}"
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."
