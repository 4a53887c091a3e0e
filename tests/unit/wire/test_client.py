"""The delivery client against real receivers on 127.0.0.1 (HTTPS with trustme certificates).

Every connection in this file goes to 127.0.0.0/8. The fake resolver maps
made-up names to 127.0.0.1 (allowed by the client's allow-list); tests about
blocked addresses assert that no connection was even attempted.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import time
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import trustme
from aiohttp import AddrInfoType
from standardwebhooks.webhooks import Webhook

from auditrelay.wire.client import DeliveryClient, DeliveryConfig, DeliveryResult, parse_retry_after
from auditrelay.wire.signing import delivery_headers, generate_secret, new_batch_id, sign
from auditrelay.wire.ssrf import IPAddress, validate_destination_url
from tests.support.polling import eventually

NAME = "siem.auditrelay.test"
OTHER = "other.auditrelay.test"
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
BODY = b'[{"specversion":"1.0","id":"aud_1","type":"pro.atmos.workspace.created"}]'


# --- receivers -------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


Handler = Callable[[Request, asyncio.StreamWriter], Awaitable[None]]


def respond(status: int, headers: dict[str, str] | None = None, body: bytes = b"ok") -> Handler:
    async def handler(_: Request, writer: asyncio.StreamWriter) -> None:
        fields = {**(headers or {}), "Content-Length": str(len(body))}
        head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
        writer.write(head.encode() + b"\r\n" + body)
        await writer.drain()

    return handler


class Receiver:
    """A minimal HTTP/1.1 server on 127.0.0.1 that records what it saw."""

    def __init__(self, handler: Handler, *, cert: trustme.LeafCert | None = None) -> None:
        self._handler = handler
        self._cert = cert
        self.requests: list[Request] = []
        self.sni_names: list[str | None] = []
        self.connections = 0
        self._tasks: set[asyncio.Task[typing.Any]] = set()
        self.port = 0

    async def __aenter__(self) -> Receiver:
        context = None
        if self._cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._cert.configure_cert(context)
            context.sni_callback = self._on_sni
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _on_sni(self, _obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        self.sni_names.append(name)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if line:
                        key, _, value = line.partition(":")
                        headers[key.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Request(method, target, headers, body)
                self.requests.append(request)
                await self._handler(request, writer)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._tasks.discard(task)


# --- client side helpers ---------------------------------------------------------------


class SequenceResolver:
    """Answers from a per-name list of answers, one per call (the last one repeats)."""

    def __init__(self, answers: dict[str, Sequence[Sequence[str]]]) -> None:
        self._answers = {
            name: [[ipaddress.ip_address(a) for a in answer] for answer in seq]
            for name, seq in answers.items()
        }
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[IPAddress]:
        count = sum(1 for name, _ in self.calls if name == host)
        self.calls.append((host, port))
        if host not in self._answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answers = self._answers[host]
        return list(answers[min(count, len(answers) - 1)])


class SpySockets:
    """Makes the socket of every TCP connect and records where it goes (loopback only,
    asserted); the client then really connects it."""

    def __init__(self) -> None:
        self.connects: list[tuple[str, int]] = []

    def __call__(self, addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, address = addr_info
        host, port = str(address[0]), int(address[1])
        self.connects.append((host, port))
        # The guard of this whole file: nothing but loopback is ever dialled.
        assert ipaddress.ip_address(host) in LOOPBACK[0]
        return socket.socket(family, type_, proto)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def make_client(
    ca: trustme.CA,
    resolver: SequenceResolver | None = None,
    spy: SpySockets | None = None,
    **config: typing.Any,
) -> DeliveryClient:
    return DeliveryClient(
        DeliveryConfig(allow_private_cidrs=LOOPBACK, **config),
        resolver=resolver or SequenceResolver({NAME: [["127.0.0.1"]], OTHER: [["127.0.0.1"]]}),
        ssl_context=client_context(ca),
        socket_factory=spy or SpySockets(),
    )


def signed_headers(secret: str) -> dict[str, str]:
    msg_id, timestamp = new_batch_id(), int(time.time())
    return delivery_headers(msg_id, timestamp, sign([secret], msg_id, timestamp, BODY), "0.1.0")


async def deliver_once(
    ca: trustme.CA,
    handler: Handler,
    *,
    cert: trustme.LeafCert | None = None,
    path: str = "/",
    **config: typing.Any,
) -> tuple[DeliveryResult, Receiver]:
    """One delivery to ``https://NAME:port{path}`` served by ``handler``."""
    leaf = cert if cert is not None else ca.issue_cert(NAME)
    async with Receiver(handler, cert=leaf) as rx, make_client(ca, **config) as client:
        result = await client.post_batch(f"https://{NAME}:{rx.port}{path}", BODY, {})
    return result, rx


# --- tests -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_delivery_connects_to_checked_ip_with_sni_and_host_for_the_name(
    ca: trustme.CA,
) -> None:
    secret = generate_secret()
    spy = SpySockets()
    resolver = SequenceResolver({NAME: [["127.0.0.1"]]})
    async with Receiver(respond(200), cert=ca.issue_cert(NAME)) as rx:
        url = f"https://{NAME}:{rx.port}/ingest?source=auditrelay"
        headers = {**signed_headers(secret), "X-Tenant": "t1"}
        async with make_client(ca, resolver, spy) as client:
            result = await client.post_batch(url, BODY, headers)

    assert result == DeliveryResult(
        ok=True, status_code=200, latency_ms=result.latency_ms, error=None,
        retry_after_seconds=None, gone=False,
    )
    assert 0 <= result.latency_ms < 10_000
    assert spy.connects == [("127.0.0.1", rx.port)]
    assert resolver.calls == [(NAME, rx.port)]
    assert rx.sni_names == [NAME]
    [seen] = rx.requests
    assert (seen.method, seen.target, seen.body) == ("POST", "/ingest?source=auditrelay", BODY)
    assert seen.headers["host"] == f"{NAME}:{rx.port}"
    assert seen.headers["user-agent"] == "auditrelay/0.1.0"
    assert seen.headers["content-type"] == "application/cloudevents-batch+json"
    assert seen.headers["x-tenant"] == "t1"
    assert seen.headers["x-webhook-id"] == seen.headers["webhook-id"]
    Webhook(secret).verify(seen.body, seen.headers, json_parse=False)


@pytest.mark.asyncio
async def test_certificate_for_another_name_fails_verification(ca: trustme.CA) -> None:
    result, rx = await deliver_once(ca, respond(200), cert=ca.issue_cert(OTHER))
    assert not result.ok
    assert result.status_code is None
    assert result.error is not None
    assert "ConnectError" in result.error
    assert "CERTIFICATE_VERIFY_FAILED" in result.error
    assert rx.requests == []


@pytest.mark.asyncio
async def test_certificate_from_an_untrusted_ca_fails(ca: trustme.CA) -> None:
    result, rx = await deliver_once(ca, respond(200), cert=trustme.CA().issue_cert(NAME))
    assert result.error is not None
    assert "CERTIFICATE_VERIFY_FAILED" in result.error
    assert rx.requests == []


@pytest.mark.asyncio
async def test_redirect_is_not_followed(ca: trustme.CA) -> None:
    async with Receiver(respond(200), cert=ca.issue_cert(OTHER)) as target:
        location = f"https://{OTHER}:{target.port}/landing"
        result, rx = await deliver_once(ca, respond(302, {"Location": location}))
    assert result.ok is False
    assert result.status_code == 302
    assert result.error == "HTTP 302: redirect not followed"
    assert len(rx.requests) == 1
    assert target.connections == 0
    assert target.requests == []


@pytest.mark.asyncio
async def test_receiver_that_never_answers_is_cut_off_by_the_deadline(ca: trustme.CA) -> None:
    never = asyncio.Event()

    async def silent(_: Request, __: asyncio.StreamWriter) -> None:
        await never.wait()

    result, rx = await deliver_once(ca, silent, request_timeout_seconds=1.0)
    assert result.error == "timed out: no complete answer within 1 s"
    assert result.ok is False
    assert result.status_code is None
    assert 900 <= result.latency_ms < 5000
    assert len(rx.requests) == 1


@pytest.mark.asyncio
async def test_slow_drip_body_is_cut_off_by_the_whole_request_deadline(ca: trustme.CA) -> None:
    async def drip(_: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        for _byte in range(100_000):  # each byte well inside any per-read timeout
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.05)

    result, _ = await deliver_once(ca, drip, request_timeout_seconds=1.0)
    assert result.error is not None
    assert result.error.startswith("timed out")
    assert 900 <= result.latency_ms < 5000


@pytest.mark.asyncio
async def test_huge_response_body_is_not_read_beyond_the_cap(ca: trustme.CA) -> None:
    total = 256 * 1024 * 1024
    sent: list[int] = []
    finished = asyncio.Event()

    async def flood(_: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n".encode())
        chunk = b"x" * 65536
        count = 0
        try:
            while count < total:
                writer.write(chunk)
                await writer.drain()
                count += len(chunk)
        finally:
            sent.append(count)
            finished.set()

    async with Receiver(flood, cert=ca.issue_cert(NAME)) as rx:
        async with make_client(ca, response_body_cap_bytes=64 * 1024) as client:
            started = time.monotonic()
            result = await client.post_batch(f"https://{NAME}:{rx.port}/", BODY, {})
            elapsed = time.monotonic() - started
        async with asyncio.timeout(10):
            await finished.wait()
    assert result.ok
    assert result.status_code == 200
    assert elapsed < 5
    # Only what socket buffers held was ever written; the client hung up early.
    assert sent[0] < 32 * 1024 * 1024


@pytest.mark.asyncio
async def test_dns_rebinding_to_a_blocked_address_makes_no_connection(ca: trustme.CA) -> None:
    resolver = SequenceResolver({NAME: [["127.0.0.1"], ["10.0.0.1"]]})
    spy = SpySockets()
    async with Receiver(respond(200), cert=ca.issue_cert(NAME)) as rx:
        url = f"https://{NAME}:{rx.port}/"
        validated = validate_destination_url(
            url, resolver=resolver, allow_private_cidrs=LOOPBACK
        )
        assert validated.addresses == (ipaddress.ip_address("127.0.0.1"),)
        async with make_client(ca, resolver, spy) as client:
            result = await client.post_batch(validated.url, BODY, {})
    assert result.ok is False
    assert result.error == (
        f"refused before connecting: url: host {NAME} resolves to an address in a private or "
        "reserved range"
    )
    assert spy.connects == []
    assert resolver.calls == [(NAME, rx.port), (NAME, rx.port)]
    assert rx.connections == 0


@pytest.mark.asyncio
async def test_one_blocked_address_among_several_refuses_the_delivery(ca: trustme.CA) -> None:
    resolver = SequenceResolver({NAME: [["127.0.0.1", "169.254.169.254"]]})
    spy = SpySockets()
    async with make_client(ca, resolver, spy) as client:
        result = await client.post_batch(f"https://{NAME}:8443/", BODY, {})
    assert result.error is not None
    assert "resolves to an address in a private or reserved range" in result.error
    assert "169.254.169.254" not in result.error  # tenants see this error: no DNS oracle
    assert spy.connects == []


@pytest.mark.asyncio
async def test_next_address_is_tried_when_the_first_refuses(ca: trustme.CA) -> None:
    # No body with a 204 (RFC 9110): aiohttp fails an attempt whose 204 is followed by bytes.
    async with Receiver(respond(204, body=b""), cert=ca.issue_cert(NAME)) as rx:
        # Nothing listens on 127.0.0.2: that connect is refused by the kernel.
        resolver = SequenceResolver({NAME: [["127.0.0.2", "127.0.0.1"]]})
        spy = SpySockets()
        async with make_client(ca, resolver, spy) as client:
            result = await client.post_batch(f"https://{NAME}:{rx.port}/", BODY, {})
    assert result.ok
    assert result.status_code == 204
    assert spy.connects == [("127.0.0.2", rx.port), ("127.0.0.1", rx.port)]


@pytest.mark.asyncio
async def test_static_refusal_needs_no_resolver_nor_socket(ca: trustme.CA) -> None:
    resolver = SequenceResolver({})
    spy = SpySockets()
    async with make_client(ca, resolver, spy) as client:
        for url, expected in [
            ("https://10.0.0.1/", "url: host 10.0.0.1 is a private address"),
            ("https://user@siem.auditrelay.test/", "userinfo"),
            ("ftp://siem.auditrelay.test/", "scheme 'ftp'"),
        ]:
            result = await client.post_batch(url, BODY, {})
            assert result.error is not None
            assert result.error.startswith("refused: ")
            assert expected in result.error
    assert resolver.calls == []
    assert spy.connects == []


@pytest.mark.asyncio
async def test_ip_literal_on_a_refused_port_makes_no_connection(ca: trustme.CA) -> None:
    # aiohttp asks no resolver about an IP literal: the port rule must hold without one.
    resolver = SequenceResolver({})
    spy = SpySockets()
    async with make_client(ca, resolver, spy, allowed_ports=((443, 443),)) as client:
        result = await client.post_batch("https://127.0.0.1:8443/in", BODY, {})
    assert result.error is not None
    assert result.error.startswith("refused")
    assert "port 8443 is not allowed" in result.error
    assert resolver.calls == []
    assert spy.connects == []


@pytest.mark.asyncio
async def test_plain_http_only_inside_the_allow_list(ca: trustme.CA) -> None:
    resolver = SequenceResolver({"public.auditrelay.test": [["93.184.216.34"]]})
    spy = SpySockets()
    async with Receiver(respond(200)) as rx, make_client(ca, resolver, spy) as client:
        allowed = await client.post_batch(f"http://127.0.0.1:{rx.port}/in", BODY, {})
        refused = await client.post_batch(f"http://public.auditrelay.test:{rx.port}/in", BODY, {})
    assert allowed.ok
    assert rx.requests[0].target == "/in"
    assert refused.error is not None
    assert "plain http:// is accepted only inside" in refused.error
    assert spy.connects == [("127.0.0.1", rx.port)]


@pytest.mark.asyncio
async def test_connection_refused_becomes_an_error(ca: trustme.CA) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with make_client(ca) as client:
        result = await client.post_batch(f"https://{NAME}:{port}/", BODY, {})
    assert result.ok is False
    assert result.error is not None
    assert result.error.startswith("ConnectError")


@pytest.mark.asyncio
async def test_unresolvable_name_becomes_an_error(ca: trustme.CA) -> None:
    spy = SpySockets()
    async with make_client(ca, SequenceResolver({}), spy) as client:
        result = await client.post_batch("https://nowhere.auditrelay.test/", BODY, {})
    assert result.error == "ConnectError: DNS resolution of nowhere.auditrelay.test failed"
    assert spy.connects == []


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "headers", "ok", "gone", "retry_after", "error"),
    [
        (202, {}, True, False, None, None),
        (410, {}, False, True, None, "HTTP 410 Gone: the receiver asks to stop deliveries"),
        (429, {"Retry-After": "120"}, False, False, 120.0, "HTTP 429"),
        (503, {"Retry-After": "7"}, False, False, 7.0, "HTTP 503"),
        (500, {"Retry-After": "120"}, False, False, None, "HTTP 500"),
        (429, {"Retry-After": "soon"}, False, False, None, "HTTP 429"),
        (301, {"Location": "https://siem.auditrelay.test/x"}, False, False, None,
         "HTTP 301: redirect not followed"),
    ],
)
async def test_status_outcomes(
    ca: trustme.CA,
    status: int,
    headers: dict[str, str],
    ok: bool,
    gone: bool,
    retry_after: float | None,
    error: str | None,
) -> None:
    result, _ = await deliver_once(ca, respond(status, headers))
    assert (result.ok, result.status_code, result.gone) == (ok, status, gone)
    assert result.retry_after_seconds == retry_after
    assert result.error == error


@pytest.mark.asyncio
async def test_a_204_with_a_body_fails_with_words_its_receiver_can_act_on(
        ca: trustme.CA) -> None:
    # HTTP forbids it; aiohttp fails the answer, and the error says what to fix.
    result, _ = await deliver_once(ca, respond(204, body=b"hello"))
    assert result.ok is False
    assert result.error is not None
    assert result.error.startswith("RemoteProtocolError: the receiver's answer is not valid "
                                   "HTTP/1.1 (a body on a 204 or 304 answer"), result.error
    assert "b'hello'" in result.error  # the stray bytes, as the parser met them


@pytest.mark.asyncio
async def test_retry_after_http_date_on_503(ca: trustme.CA) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    result, _ = await deliver_once(ca, respond(503, {"Retry-After": later}))
    assert result.retry_after_seconds is not None
    assert 80 <= result.retry_after_seconds <= 90


@pytest.mark.asyncio
async def test_cookies_are_never_kept(ca: trustme.CA) -> None:
    handler = respond(200, {"Set-Cookie": "session=abc; Path=/"})
    async with Receiver(handler, cert=ca.issue_cert(NAME)) as rx:
        async with make_client(ca) as client:
            first = await client.post_batch(f"https://{NAME}:{rx.port}/", BODY, {})
            second = await client.post_batch(f"https://{NAME}:{rx.port}/", BODY, {})
        await eventually(lambda: len(rx.requests) == 2, 10, "both requests recorded",
                         interval=0.01)
    assert first.ok
    assert second.ok
    assert "cookie" not in rx.requests[1].headers
    assert rx.requests[1].headers["accept-encoding"] == "identity"


@pytest.mark.asyncio
async def test_query_string_never_reaches_the_error_text(ca: trustme.CA) -> None:
    result, _ = await deliver_once(
        ca, respond(200), cert=ca.issue_cert(OTHER), path="/in?token=very-secret-token"
    )
    assert result.error is not None
    assert "very-secret-token" not in result.error


def test_repr_holds_no_secret() -> None:
    client = DeliveryClient(DeliveryConfig(allow_private_cidrs=LOOPBACK))
    assert repr(client).startswith("DeliveryClient(DeliveryConfig(")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("120", 120.0),
        (" 5 ", 5.0),
        ("0", 0.0),
        ("-1", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        ("Wed, 25 Nov 2026 10:01:30 GMT", 90.0),
        ("Wed, 25 Nov 2026 09:59:00 GMT", 0.0),
        ("Wednesday, 25-Nov-26 10:00:10 GMT", 10.0),  # obsolete RFC 850 form
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after(value, now=now) == expected
