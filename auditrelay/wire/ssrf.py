"""Who may be called: the SSRF policy for destination URLs (contract section 3).

Pure policy. The only I/O is the injected resolver, a callable ``(host, port)
-> addresses`` (``system_resolver`` wraps ``socket.getaddrinfo``; tests pass a
dict-backed fake). The same rules run twice: when a destination is created or
updated (``validate_destination_url``) and when a delivery connects
(``check_addresses`` on a fresh resolution, see ``auditrelay.wire.client``).

Every refusal raises ``InvalidInputError(message, field="url")`` whose message
names what is wrong, e.g. ``url: host siem.example.com resolves to an address in
a private or reserved range``. It never names the address a name resolved to (that
would tell a tenant what internal names resolve to); that is logged at DEBUG.
Addresses inside ``allow_private_cidrs`` (operators' setting
``AUDITRELAY_ALLOW_PRIVATE_CIDRS``) are exempt; plain ``http://`` is accepted only
when every address is inside one of those networks. The port must be in
``allowed_ports`` (``AUDITRELAY_ALLOWED_DESTINATION_PORTS``; 443 and 1024-65535 by
default), whatever the address: port 22, 25 or 6379 of a public host is no SIEM.

The parser is deliberately stricter than any URL parser it might be compared
with: whatever it accepts, it re-serialises (``ValidatedUrl.url``), so the HTTP
client never sees a string that two parsers could read differently.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import idna

from auditrelay.schemas.errors import InvalidInputError
from auditrelay.schemas.settings import DEFAULT_DESTINATION_PORTS

__all__ = [
    "DEFAULT_DESTINATION_PORTS",
    "IPAddress",
    "IPNetwork",
    "ParsedUrl",
    "PortRanges",
    "Resolver",
    "ValidatedUrl",
    "blocked_reason",
    "check_addresses",
    "check_port",
    "parse_destination_url",
    "system_resolver",
    "validate_destination_url",
    "validate_destination_url_async",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: ``(host, port) -> addresses``; raises ``OSError`` when the name does not resolve.
Resolver = Callable[[str, int], Sequence[IPAddress]]
#: Inclusive ``(low, high)`` ranges of ports.
PortRanges = Sequence[tuple[int, int]]

log = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048
_DEFAULT_PORTS = {"https": 443, "http": 80}

# Decided by explicit tables, not by ``ipaddress``'s is_global/is_private: those
# flags changed between Python releases and call e.g. 224.0.0.1, fec0::1 and
# 64:ff9b::/96 "global". First match wins, so narrower networks come first.
_V4_BLOCKED: tuple[tuple[ipaddress.IPv4Network, str], ...] = tuple(
    (ipaddress.IPv4Network(net), reason)
    for net, reason in (
        ("0.0.0.0/8", "an unspecified (this-network) address"),
        ("10.0.0.0/8", "a private address"),
        ("100.64.0.0/10", "a shared (CGNAT) address"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.169.254/32", "a link-local (cloud metadata) address"),
        ("169.254.0.0/16", "a link-local address"),
        ("172.16.0.0/12", "a private address"),
        ("192.0.0.0/24", "a reserved (IETF protocol assignment) address"),
        ("192.0.2.0/24", "a documentation address"),
        ("192.88.99.0/24", "a reserved (6to4 relay anycast) address"),
        ("192.168.0.0/16", "a private address"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("224.0.0.0/4", "a multicast address"),
        ("255.255.255.255/32", "a broadcast address"),
        ("240.0.0.0/4", "a reserved address"),
    )
)

_V6_BLOCKED: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(net), reason)
    for net, reason in (
        ("::/128", "an unspecified address"),
        ("::1/128", "a loopback address"),
        # IPv4 embedded in IPv6 is refused outright: the embedded address is
        # reached through a translator nobody here controls.
        ("::ffff:0:0/96", "an IPv4-mapped IPv6 address"),
        ("::ffff:0:0:0/96", "an IPv4-translated IPv6 address"),
        ("::/96", "an IPv4-compatible IPv6 address"),
        ("64:ff9b::/96", "a NAT64 address"),
        ("64:ff9b:1::/48", "a NAT64 (local-use) address"),
        ("100::/64", "a discard-only address"),
        ("2001::/32", "a Teredo address"),
        ("2001:2::/48", "a benchmarking address"),
        ("2001:db8::/32", "a documentation address"),
        ("2001::/23", "a reserved (IETF protocol assignment) address"),
        ("2002::/16", "a 6to4 address"),
        ("3fff::/20", "a documentation address"),
        ("5f00::/16", "a reserved (SRv6) address"),
        ("fc00::/7", "a private (unique local) address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address"),
        ("ff00::/8", "a multicast address"),
    )
)
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
# Prefixes whose low 32 bits are an IPv4 address (ipaddress knows mapped and 6to4 only).
_V6_LOW32_V4 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("::/96"))

# Refused by name whatever they resolve to (RFC 6761 and common /etc/hosts names).
_LOCAL_NAMES = frozenset({
    "localhost", "localhost.localdomain", "localhost4", "localhost4.localdomain4",
    "localhost6", "localhost6.localdomain6", "ip6-localhost", "ip6-loopback",
    "ip6-localnet", "ip6-mcastprefix", "ip6-allnodes", "ip6-allrouters",
    "ip6-allhosts", "broadcasthost",
})
_LOCAL_SUFFIXES = (".localhost",)

# WHATWG URL: a host whose last label is a number is parsed as IPv4, and
# getaddrinfo agrees (inet_aton accepts 127.1, 0x7f.1, 0177.0.0.1, 2130706433).
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)")
_HOST_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


@dataclass(frozen=True, slots=True)
class ParsedUrl:
    """A destination URL that passed every check that needs no DNS."""

    scheme: str
    #: ASCII (IDNA) and lower case, without brackets or a trailing dot.
    host: str
    port: int
    #: Path and query, as sent in the request line; ``/`` when the URL has none.
    target: str
    #: The address when the host is an IP literal, else None.
    literal: IPAddress | None

    @property
    def url(self) -> str:
        """The URL re-serialised from the checked parts; send this, never the input."""
        return _serialise(self.scheme, self.host, self.port, self.target)


@dataclass(frozen=True, slots=True)
class ValidatedUrl:
    """A destination URL that passed every check, with the addresses it resolved to."""

    scheme: str
    host: str
    port: int
    target: str
    addresses: tuple[IPAddress, ...]

    @property
    def url(self) -> str:
        """The URL re-serialised from the checked parts; send this, never the input."""
        return _serialise(self.scheme, self.host, self.port, self.target)


def _serialise(scheme: str, host: str, port: int, target: str) -> str:
    netloc = f"[{host}]" if ":" in host else host
    if _DEFAULT_PORTS[scheme] != port:
        netloc = f"{netloc}:{port}"
    return f"{scheme}://{netloc}{target}"


def _refuse(message: str) -> InvalidInputError:
    return InvalidInputError(f"url: {message}", field="url")


def blocked_reason(address: IPAddress) -> str | None:
    """Why ``address`` may not be called (``"a private address"``), or None if it is global."""
    if isinstance(address, ipaddress.IPv4Address):
        for v4net, reason in _V4_BLOCKED:
            if address in v4net:
                return reason
        return None if address.is_global else "a non-global address"
    if address.scope_id:
        return "a scoped (zone id) address"
    for v6net, reason in _V6_BLOCKED:
        if address in v6net:
            embedded = _embedded_ipv4(address)
            return f"{reason} embedding {embedded}" if embedded else reason
    if address not in _V6_GLOBAL_UNICAST:
        return "a reserved address"
    return None if address.is_global else "a non-global address"


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in net for net in _V6_LOW32_V4):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def check_addresses(
    addresses: Iterable[IPAddress],
    allow: Sequence[IPNetwork] = (),
    *,
    host: str | None = None,
    require_allowed: bool = False,
) -> tuple[IPAddress, ...]:
    """Refuse unless every address may be called; return them, deduplicated, in order.

    One blocked address refuses the whole set: a name resolving to a public and a
    private address could otherwise be steered to the private one. Addresses
    inside ``allow`` are exempt; with ``require_allowed`` (plain http) every
    address must be inside ``allow``.
    """
    checked = tuple(dict.fromkeys(addresses))
    if not checked:
        raise _refuse(f"host {host} resolves to no address" if host else "no address")
    for address in checked:
        if any(address in net for net in allow):
            continue
        if require_allowed:
            _log_refusal(host, address, "which is outside the allowed private networks")
            subject = f"host {host} resolves to an address" if host is not None \
                else f"host {address} is"
            raise _refuse(
                f"{subject} outside the allowed private networks; "
                "plain http:// is accepted only inside them, use https://"
            )
        reason = blocked_reason(address)
        if reason is not None:
            _log_refusal(host, address, reason)
            raise _refuse(f"host {host} resolves to an address in a private or reserved range"
                          if host is not None else f"host {address} is {reason}")
    return checked


def check_port(port: int, allowed: PortRanges = DEFAULT_DESTINATION_PORTS) -> None:
    """Refuse ``port`` unless it is inside one of the ``allowed`` ranges."""
    if not any(low <= port <= high for low, high in allowed):
        ranges = ", ".join(str(low) if low == high else f"{low}-{high}" for low, high in allowed)
        raise _refuse(f"port {port} is not allowed; destinations may use ports {ranges}")


def _log_refusal(host: str | None, address: IPAddress, reason: str) -> None:
    """What a name resolved to, for operators only: in a refusal it would tell a tenant
    what internal names resolve to (an oracle of internal DNS)."""
    if host is not None:
        log.debug("SSRF rules refused: host %s resolves to %s, %s", host, address, reason)


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Resolve with ``socket.getaddrinfo`` (blocking: call it from a thread in async code)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    found: dict[IPAddress, None] = {}
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            # A scope id would make the address compare unequal to the tables.
            found[ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])] = None
    return list(found)


def parse_destination_url(
    url: str, *, allow_private_cidrs: Sequence[IPNetwork] = ()
) -> ParsedUrl:
    """Every check that needs no DNS: scheme, userinfo, host syntax, IP literals, port."""
    if not isinstance(url, str):
        raise _refuse("must be a string")
    if len(url) > MAX_URL_LENGTH:
        raise _refuse(f"longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F or c.isspace() for c in url):
        raise _refuse("contains whitespace or control characters")
    if "\\" in url:
        raise _refuse("contains a backslash")
    match = _SCHEME.match(url)
    if match is None:
        raise _refuse("must be an absolute https:// URL")
    scheme = match.group(1).lower()
    if scheme not in _DEFAULT_PORTS:
        raise _refuse(f"scheme {scheme!r} is not allowed; use https://")
    rest = url[match.end():]
    if not rest.startswith("//"):
        raise _refuse("must be an absolute https:// URL (scheme://host/path)")
    rest = rest[2:]
    end = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))
    authority, remainder = rest[:end], rest[end:]
    if "@" in authority:
        raise _refuse("userinfo (user:password@) is not allowed")

    raw_host, raw_port = _split_authority(authority)
    port = _parse_port(raw_port, scheme)
    host, literal = _parse_host(raw_host, bracketed=authority.startswith("["))
    if literal is not None:
        check_addresses([literal], allow_private_cidrs, require_allowed=scheme == "http")
    if "#" in remainder:
        raise _refuse("must not contain a fragment (#...)")
    target = remainder or "/"
    if target.startswith("?"):
        target = "/" + target
    return ParsedUrl(scheme=scheme, host=host, port=port, target=target, literal=literal)


def _split_authority(authority: str) -> tuple[str, str | None]:
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise _refuse("IPv6 literal is missing its closing bracket")
        after = authority[close + 1:]
        if after and not after.startswith(":"):
            raise _refuse("unexpected characters after the IPv6 literal")
        return authority[1:close], (after[1:] if after else None)
    if authority.count(":") > 1:
        raise _refuse("IPv6 literals must be enclosed in brackets")
    host, colon, port = authority.partition(":")
    return host, (port if colon else None)


def _parse_port(raw: str | None, scheme: str) -> int:
    if raw is None:
        return _DEFAULT_PORTS[scheme]
    if not raw:
        raise _refuse("port is empty")
    if not (raw.isascii() and raw.isdigit()):
        raise _refuse("port must be a number")
    if len(raw) > 5 or not 1 <= int(raw) <= 65535:
        raise _refuse(f"port {raw} is out of range (1-65535)")
    return int(raw)


def _parse_host(raw: str, *, bracketed: bool) -> tuple[str, IPAddress | None]:
    if not raw:
        raise _refuse("host is empty")
    if bracketed:
        if "%" in raw:
            raise _refuse("IPv6 zone identifiers (%...) are not allowed")
        try:
            v6 = ipaddress.IPv6Address(raw)
        except ValueError:
            raise _refuse("host is not a valid IPv6 literal") from None
        return str(v6), v6
    if "%" in raw:
        raise _refuse("host must not contain percent-encoding")
    host = raw
    if not host.isascii():
        try:
            # UTS #46 mapping also folds full-width digits and dots, so the
            # IP-literal checks below run on what DNS would really be asked.
            host = idna.encode(host, uts46=True).decode("ascii")
        except UnicodeError:  # idna.IDNAError and its subclasses
            raise _refuse("host is not a valid internationalised domain name") from None
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    if not host or host.endswith(".") or ".." in host or host.startswith("."):
        raise _refuse(f"host {raw} has an empty label")
    if host in _LOCAL_NAMES or host.endswith(_LOCAL_SUFFIXES):
        raise _refuse(f"host {host} is a local name")
    try:
        v4 = ipaddress.IPv4Address(host)
    except ValueError:
        pass
    else:
        return str(v4), v4
    if _is_numeric_host(host):
        try:
            meaning = f" meaning {socket.inet_ntoa(socket.inet_aton(host))}"
        except OSError:
            meaning = ""
        raise _refuse(f"host {host} is an IPv4 address in a non-standard form{meaning}")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in host.split(".")):
        raise _refuse(f"host {host} is not a valid host name")
    return host, None


def _is_numeric_host(host: str) -> bool:
    try:
        socket.inet_aton(host)
    except OSError:
        return _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]) is not None
    return True


def _resolve(resolver: Resolver, host: str, port: int) -> tuple[IPAddress, ...]:
    try:
        return tuple(resolver(host, port))
    except (OSError, UnicodeError) as exc:
        raise _refuse(f"host {host} could not be resolved") from exc


def validate_destination_url(
    url: str,
    *,
    resolver: Resolver = system_resolver,
    allow_private_cidrs: Sequence[IPNetwork] = (),
    allowed_ports: PortRanges = DEFAULT_DESTINATION_PORTS,
) -> ValidatedUrl:
    """Check ``url`` against contract section 3, resolving its host once; blocking."""
    parsed = parse_destination_url(url, allow_private_cidrs=allow_private_cidrs)
    if parsed.literal is not None:
        addresses: tuple[IPAddress, ...] = (parsed.literal,)
    else:
        addresses = check_addresses(
            _resolve(resolver, parsed.host, parsed.port),
            allow_private_cidrs,
            host=parsed.host,
            require_allowed=parsed.scheme == "http",
        )
    # After the address: a refused address is the more useful message (plain http's port
    # 80, say, is refused for being plain http first).
    check_port(parsed.port, allowed_ports)
    return ValidatedUrl(
        scheme=parsed.scheme,
        host=parsed.host,
        port=parsed.port,
        target=parsed.target,
        addresses=addresses,
    )


async def validate_destination_url_async(
    url: str,
    *,
    resolver: Resolver = system_resolver,
    allow_private_cidrs: Sequence[IPNetwork] = (),
    allowed_ports: PortRanges = DEFAULT_DESTINATION_PORTS,
) -> ValidatedUrl:
    """``validate_destination_url`` in a worker thread, so DNS never blocks the loop."""
    return await asyncio.to_thread(
        validate_destination_url, url, resolver=resolver, allow_private_cidrs=allow_private_cidrs,
        allowed_ports=allowed_ports,
    )
