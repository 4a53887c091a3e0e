"""The SSRF policy of contract section 3, table-driven, without any network access."""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Sequence

import pytest

from auditrelay.schemas.errors import InvalidInputError
from auditrelay.wire.ssrf import (
    IPAddress,
    IPNetwork,
    blocked_reason,
    check_addresses,
    parse_destination_url,
    validate_destination_url,
    validate_destination_url_async,
)

LOOPBACK_V4 = (ipaddress.ip_network("127.0.0.0/8"),)


class FakeResolver:
    """Dict-backed ``(host, port) -> addresses``; records every lookup."""

    def __init__(self, names: dict[str, Sequence[str]]) -> None:
        self._names = {
            name: [ipaddress.ip_address(a) for a in addrs] for name, addrs in names.items()
        }
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.calls.append((host, port))
        if host not in self._names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self._names[host])


#: Names the fake resolver knows; everything else does not resolve.
NAMES: dict[str, Sequence[str]] = {
        "siem.example.com": ["93.184.216.34"],
        "v6.example.com": ["2606:4700::1111"],
        "dual.example.com": ["93.184.216.34", "2606:4700::1111"],
        "xn--bcher-kva.example.com": ["93.184.216.34"],
        "private.example.com": ["10.0.0.1"],
        "metadata.example.com": ["169.254.169.254"],
        "loop.example.com": ["127.0.0.1"],
        "mixed.example.com": ["93.184.216.34", "192.168.1.10"],
        "ula.example.com": ["fd00::1"],
        "mapped.example.com": ["::ffff:10.0.0.1"],
        "nat64.example.com": ["64:ff9b::a9fe:a9fe"],
        "cgnat.example.com": ["100.64.0.1"],
        "linklocal6.example.com": ["fe80::1"],
        "multicast.example.com": ["239.1.2.3"],
        "empty.example.com": [],
    }


def make_resolver() -> FakeResolver:
    return FakeResolver(NAMES)


REFUSED: list[tuple[str, str]] = [
    # Schemes.
    ("http://siem.example.com/", "plain http:// is accepted only inside"),
    ("ftp://siem.example.com/", "scheme 'ftp' is not allowed"),
    ("file:///etc/passwd", "scheme 'file' is not allowed"),
    ("gopher://siem.example.com:70/_", "scheme 'gopher' is not allowed"),
    ("javascript:alert(1)", "scheme 'javascript' is not allowed"),
    ("data:text/plain,hi", "scheme 'data' is not allowed"),
    ("//siem.example.com/", "must be an absolute https:// URL"),
    ("https:siem.example.com/", "must be an absolute https:// URL"),
    # Userinfo and fragment tricks.
    ("https://good.example@10.0.0.1/", "userinfo (user:password@) is not allowed"),
    ("https://user:pass@siem.example.com/", "userinfo (user:password@) is not allowed"),
    ("https://10.0.0.1#@good.example/", "host 10.0.0.1 is a private address"),
    ("https://siem.example.com/#frag", "must not contain a fragment"),
    # IPv4 literals in every blocked range.
    ("https://127.0.0.1/", "host 127.0.0.1 is a loopback address"),
    ("https://127.200.1.1:8443/", "host 127.200.1.1 is a loopback address"),
    ("https://10.1.2.3/", "host 10.1.2.3 is a private address"),
    ("https://172.16.0.1/", "host 172.16.0.1 is a private address"),
    ("https://172.31.255.254/", "host 172.31.255.254 is a private address"),
    ("https://192.168.1.1/", "host 192.168.1.1 is a private address"),
    ("https://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local (cloud"),
    ("https://169.254.10.1/", "host 169.254.10.1 is a link-local address"),
    ("https://100.64.0.1/", "host 100.64.0.1 is a shared (CGNAT) address"),
    ("https://100.127.255.254/", "is a shared (CGNAT) address"),
    ("https://0.0.0.0/", "host 0.0.0.0 is an unspecified"),
    ("https://224.0.0.1/", "host 224.0.0.1 is a multicast address"),
    ("https://255.255.255.255/", "host 255.255.255.255 is a broadcast address"),
    ("https://240.0.0.1/", "host 240.0.0.1 is a reserved address"),
    ("https://192.0.0.8/", "is a reserved (IETF protocol assignment) address"),
    ("https://192.0.2.1/", "host 192.0.2.1 is a documentation address"),
    ("https://198.51.100.7/", "host 198.51.100.7 is a documentation address"),
    ("https://203.0.113.9/", "host 203.0.113.9 is a documentation address"),
    ("https://198.18.0.1/", "host 198.18.0.1 is a benchmarking address"),
    ("https://198.19.255.1/", "host 198.19.255.1 is a benchmarking address"),
    # IPv6 literals.
    ("https://[::1]/", "host ::1 is a loopback address"),
    ("https://[::]/", "host :: is an unspecified address"),
    ("https://[fd00::1]/", "host fd00::1 is a private (unique local) address"),
    ("https://[fc00::1]:8443/", "host fc00::1 is a private (unique local) address"),
    ("https://[fe80::1]/", "host fe80::1 is a link-local address"),
    ("https://[fec0::1]/", "host fec0::1 is a site-local address"),
    ("https://[ff02::1]/", "host ff02::1 is a multicast address"),
    ("https://[2001:db8::1]/", "host 2001:db8::1 is a documentation address"),
    ("https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "is a Teredo address"),
    ("https://[100::1]/", "is a discard-only address"),
    # IPv4 embedded in IPv6: mapped, compatible, NAT64, 6to4.
    ("https://[::ffff:127.0.0.1]/", "IPv4-mapped IPv6 address embedding 127.0.0.1"),
    ("https://[::ffff:a9fe:a9fe]/", "IPv4-mapped IPv6 address embedding 169.254.169.254"),
    ("https://[::ffff:93.184.216.34]/", "IPv4-mapped IPv6 address embedding 93.184.216.34"),
    ("https://[::127.0.0.1]/", "IPv4-compatible IPv6 address embedding 127.0.0.1"),
    ("https://[64:ff9b::10.0.0.1]/", "NAT64 address embedding 10.0.0.1"),
    ("https://[64:ff9b:1::a00:1]/", "is a NAT64 (local-use) address"),
    ("https://[2002:7f00:1::]/", "6to4 address embedding 127.0.0.1"),
    ("https://[2002:5db8:d822::1]/", "6to4 address embedding 93.184.216.34"),
    # IPv6 literal syntax.
    ("https://[fe80::1%25eth0]/", "IPv6 zone identifiers (%...) are not allowed"),
    ("https://[fe80::1/", "IPv6 literal is missing its closing bracket"),
    ("https://[::1]x/", "unexpected characters after the IPv6 literal"),
    ("https://::1/", "IPv6 literals must be enclosed in brackets"),
    ("https://[not-an-ip]/", "host is not a valid IPv6 literal"),
    # Non-standard IPv4 forms that getaddrinfo/inet_aton would still accept.
    ("https://2130706433/", "host 2130706433 is an IPv4 address in a non-standard form"),
    ("https://2130706433:8443/", "non-standard form meaning 127.0.0.1"),
    ("https://0177.0.0.1/", "non-standard form meaning 127.0.0.1"),
    ("https://0x7f.1/", "host 0x7f.1 is an IPv4 address in a non-standard form meaning 127.0.0.1"),
    ("https://127.1/", "host 127.1 is an IPv4 address in a non-standard form meaning 127.0.0.1"),
    ("https://0/", "host 0 is an IPv4 address in a non-standard form meaning 0.0.0.0"),
    ("https://0x7f000001/", "non-standard form meaning 127.0.0.1"),
    ("https://0xA9.0xFE.0xA9.0xFE/", "non-standard form meaning 169.254.169.254"),
    ("https://1.2.3.4.5/", "host 1.2.3.4.5 is an IPv4 address in a non-standard form"),
    ("https://siem.example.123/", "is an IPv4 address in a non-standard form"),
    ("https://127.0.0.1./", "host 127.0.0.1 is a loopback address"),
    ("https://\uff11\uff12\uff17\uff0e\uff10\uff0e\uff10\uff0e\uff11/", "127.0.0.1 is a loopback"),
    # Local names, refused whatever they resolve to.
    ("https://localhost/", "host localhost is a local name"),
    ("https://localhost./", "host localhost is a local name"),
    ("https://LocalHost:8443/", "host localhost is a local name"),
    ("https://localhost.localdomain/", "host localhost.localdomain is a local name"),
    ("https://api.localhost/", "host api.localhost is a local name"),
    ("https://ip6-localhost/", "host ip6-localhost is a local name"),
    ("https://ip6-loopback/", "host ip6-loopback is a local name"),
    # Names resolving to blocked addresses (through the fake resolver).
    ("https://private.example.com/", "private.example.com resolves to 10.0.0.1, a private address"),
    ("https://metadata.example.com/", "resolves to 169.254.169.254, a link-local (cloud metadata)"),
    ("https://loop.example.com/", "loop.example.com resolves to 127.0.0.1, a loopback address"),
    ("https://mixed.example.com/", "resolves to 192.168.1.10, a private address"),
    ("https://ula.example.com/", "resolves to fd00::1, a private (unique local) address"),
    ("https://mapped.example.com/", "IPv4-mapped IPv6 address embedding 10.0.0.1"),
    ("https://nat64.example.com/", "NAT64 address embedding 169.254.169.254"),
    ("https://cgnat.example.com/", "resolves to 100.64.0.1, a shared (CGNAT) address"),
    ("https://linklocal6.example.com/", "resolves to fe80::1, a link-local address"),
    ("https://multicast.example.com/", "resolves to 239.1.2.3, a multicast address"),
    ("https://nxdomain.example.com/", "host nxdomain.example.com could not be resolved"),
    ("https://empty.example.com/", "host empty.example.com resolves to no address"),
    # Host, port and character tricks.
    ("https:///path", "host is empty"),
    ("https://:443/", "host is empty"),
    ("https://siem.example.com:0/", "port 0 is out of range (1-65535)"),
    ("https://siem.example.com:65536/", "port 65536 is out of range (1-65535)"),
    ("https://siem.example.com:0000443/", "port 0000443 is out of range"),
    ("https://siem.example.com:/", "port is empty"),
    ("https://siem.example.com:44x/", "port must be a number"),
    ("https://siem.example.com\\@10.0.0.1/", "contains a backslash"),
    ("https://siem.example.com\\.10.0.0.1/", "contains a backslash"),
    ("https://siem.example.com /", "contains whitespace or control characters"),
    (" https://siem.example.com/", "contains whitespace or control characters"),
    ("https://siem.example.com/\r\nX-Injected: 1", "contains whitespace or control characters"),
    ("https://siem.example.com\t/", "contains whitespace or control characters"),
    ("https://siem.example.com\u00a0/", "contains whitespace or control characters"),
    ("https://siem.exa%6dple.com/", "host must not contain percent-encoding"),
    ("https://a\u200d.example.com/", "host is not a valid internationalised domain name"),
    ("https://siem..example.com/", "has an empty label"),
    ("https://.siem.example.com/", "has an empty label"),
    ("https://-bad.example.com/", "host -bad.example.com is not a valid host name"),
    ("https://" + "a" * 64 + ".example.com/", "is not a valid host name"),
    ("https://siem.example.com/" + "a" * 2048, "longer than 2048 characters"),
]


@pytest.mark.parametrize(("url", "expected"), REFUSED, ids=[u[:60] for u, _ in REFUSED])
def test_refused(url: str, expected: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="auditrelay.wire.ssrf")
    with pytest.raises(InvalidInputError) as info:
        validate_destination_url(url, resolver=make_resolver(), allow_private_cidrs=())
    assert info.value.field == "url"
    message = str(info.value)
    assert message.startswith("url: ")
    assert expected in refusal_and_operator_log(message, caplog)


GENERIC = "resolves to an address in a private or reserved range"


def refusal_and_operator_log(message: str, caplog: pytest.LogCaptureFixture) -> str:
    """The refusal; where a resolved name was refused, also what operators see at DEBUG.

    A refused name's message never names its address (no oracle of internal DNS); the
    address and the reason are in the DEBUG line, which the tables' texts are checked in.
    """
    if GENERIC not in message and "resolves to an address outside" not in message:
        return message
    debug = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    assert debug, f"no DEBUG line for the operator: {message}"
    for record in caplog.records:
        if record.levelno == logging.DEBUG and len(record.args or ()) == 3:
            address = str(record.args[1])  # type: ignore[index]
            assert address not in message, message
    return f"{message}\n{debug}"


def test_table_is_large_enough() -> None:
    assert len(REFUSED) >= 40


@pytest.mark.parametrize(
    ("url", "host", "port", "target", "addresses"),
    [
        ("https://siem.example.com/ingest?token=abc", "siem.example.com", 443,
         "/ingest?token=abc", ["93.184.216.34"]),
        ("https://v6.example.com/", "v6.example.com", 443, "/", ["2606:4700::1111"]),
        ("https://dual.example.com:8443/x", "dual.example.com", 8443, "/x",
         ["93.184.216.34", "2606:4700::1111"]),
        ("HTTPS://SIEM.Example.COM.", "siem.example.com", 443, "/", ["93.184.216.34"]),
        ("https://siem.example.com?x=1", "siem.example.com", 443, "/?x=1", ["93.184.216.34"]),
        ("https://b\u00fccher.example.com/", "xn--bcher-kva.example.com", 443, "/",
         ["93.184.216.34"]),
    ],
)
def test_public_names_accepted(
    url: str, host: str, port: int, target: str, addresses: list[str]
) -> None:
    resolver = make_resolver()
    validated = validate_destination_url(url, resolver=resolver, allow_private_cidrs=())
    assert validated.scheme == "https"
    assert (validated.host, validated.port, validated.target) == (host, port, target)
    assert validated.addresses == tuple(ipaddress.ip_address(a) for a in addresses)
    assert resolver.calls == [(host, port)]


@pytest.mark.parametrize(
    ("url", "address", "normalised"),
    [
        ("https://93.184.216.34/in", "93.184.216.34", "https://93.184.216.34/in"),
        ("https://[2606:4700::1111]:8443/", "2606:4700::1111", "https://[2606:4700::1111]:8443/"),
        ("https://[2606:4700:0::1111]/", "2606:4700::1111", "https://[2606:4700::1111]/"),
    ],
)
def test_public_ip_literals_accepted_without_resolving(
    url: str, address: str, normalised: str
) -> None:
    resolver = make_resolver()
    validated = validate_destination_url(url, resolver=resolver)
    assert validated.addresses == (ipaddress.ip_address(address),)
    assert validated.url == normalised
    assert resolver.calls == []


def test_normalised_url_is_rebuilt_from_checked_parts() -> None:
    validated = validate_destination_url(
        "HTTPS://SIEM.example.com.:443/a/b?c=d", resolver=make_resolver()
    )
    assert validated.url == "https://siem.example.com/a/b?c=d"


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:8443/",
        "https://loop.example.com/",
        "http://127.0.0.1:8080/hook",
        "http://loop.example.com:8080/",
    ],
)
def test_allowed_cidrs_exempt_addresses_and_permit_plain_http(url: str) -> None:
    validated = validate_destination_url(
        url, resolver=make_resolver(), allow_private_cidrs=LOOPBACK_V4
    )
    assert validated.addresses == (ipaddress.ip_address("127.0.0.1"),)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # Plain http needs every address inside the allow-list, public ones too.
        ("http://siem.example.com/", "plain http:// is accepted only inside"),
        ("http://93.184.216.34/", "plain http:// is accepted only inside"),
        # The allow-list never exempts other ranges, nor IPv4 embedded in IPv6.
        ("https://private.example.com/", "10.0.0.1, a private address"),
        ("https://[::ffff:127.0.0.1]/", "IPv4-mapped"),
        ("https://[::1]/", "loopback"),
        # Names and non-standard forms are refused even when the address is allowed.
        ("https://localhost/", "local name"),
        ("https://127.1/", "non-standard form"),
    ],
)
def test_allow_list_is_narrow(url: str, expected: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="auditrelay.wire.ssrf")
    with pytest.raises(InvalidInputError, match=None) as info:
        validate_destination_url(url, resolver=make_resolver(), allow_private_cidrs=LOOPBACK_V4)
    assert expected in refusal_and_operator_log(str(info.value), caplog)


def test_one_blocked_address_refuses_the_whole_set() -> None:
    addresses = [ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.0.0.1")]
    with pytest.raises(InvalidInputError, match=GENERIC) as info:
        check_addresses(addresses, (), host="x.example.com")
    assert "10.0.0.1" not in str(info.value)


def test_check_addresses_deduplicates_and_keeps_order() -> None:
    a, b = ipaddress.ip_address("2606:4700::1111"), ipaddress.ip_address("93.184.216.34")
    assert check_addresses([a, b, a], ()) == (a, b)


def test_check_addresses_refuses_empty_set() -> None:
    with pytest.raises(InvalidInputError, match="resolves to no address"):
        check_addresses([], (), host="x.example.com")


@pytest.mark.parametrize(
    ("address", "allow", "ok"),
    [
        ("10.0.0.1", ("10.0.0.0/8",), True),
        ("10.0.0.1", ("10.1.0.0/16",), False),
        ("fd00::1", ("fd00::/8",), True),
        ("::ffff:10.0.0.1", ("10.0.0.0/8",), False),
    ],
)
def test_check_addresses_allow_list(address: str, allow: tuple[str, ...], ok: bool) -> None:
    networks: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n) for n in allow)
    ip = ipaddress.ip_address(address)
    if ok:
        assert check_addresses([ip], networks) == (ip,)
    else:
        with pytest.raises(InvalidInputError):
            check_addresses([ip], networks)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("93.184.216.34", None),
        ("8.8.8.8", None),
        ("2606:4700::1111", None),
        ("2001:4860:4860::8888", None),
        ("10.0.0.1", "a private address"),
        ("::ffff:8.8.8.8", "an IPv4-mapped IPv6 address embedding 8.8.8.8"),
        ("4000::1", "a reserved address"),
        ("fe80::1%eth0", "a scoped (zone id) address"),
    ],
)
def test_blocked_reason(address: str, reason: str | None) -> None:
    assert blocked_reason(ipaddress.ip_address(address)) == reason


def test_parse_needs_no_resolver() -> None:
    parsed = parse_destination_url("https://siem.example.com:8443/in?a=1")
    assert (parsed.host, parsed.port, parsed.target, parsed.literal) == (
        "siem.example.com", 8443, "/in?a=1", None
    )
    assert parsed.url == "https://siem.example.com:8443/in?a=1"


@pytest.mark.asyncio
async def test_async_variant_resolves_in_a_thread() -> None:
    resolver = make_resolver()
    validated = await validate_destination_url_async(
        "https://siem.example.com/", resolver=resolver
    )
    assert validated.addresses == (ipaddress.ip_address("93.184.216.34"),)
    with pytest.raises(InvalidInputError, match=GENERIC):
        await validate_destination_url_async("https://private.example.com/", resolver=resolver)
