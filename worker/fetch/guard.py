"""The guard of `fetch` (docs/fetch-guard.md), pure: what a URL names and whether it may be reached.

Nothing here touches the network: the client (client.py) resolves the host and asks
`check_address` about every address before it connects.

A host is read as the WHATWG URL parser reads it, so that no numeric spelling of an address
slips through as a "name": `2130706433`, `0177.0.0.1`, `0x7f.0.0.1` and `127.1` are all
127.0.0.1. IPv6 forms that carry an IPv4 address (IPv4-mapped `::ffff:0:0/96`, NAT64
`64:ff9b::/96`, 6to4 `2002::/16`) are judged by the IPv4 address they reach.
"""

import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from urllib.parse import quote, unquote, urlsplit

from worker.fetch.errors import FetchError
from worker.fetch.hosts import host_matches, normal_name

IPAddress = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network
DEFAULT_PORTS = {"http": 80, "https": 443}
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")
# What stays as it is in the request target; anything else (spaces, non-ASCII) is %-encoded.
PATH_SAFE = "/%:@!$&'()*+,;=-._~"
QUERY_SAFE = PATH_SAFE + "?"

# Why an address is refused, most specific first; `blocked_reason` falls back to ipaddress's
# own flags and finally to "not public" for whatever is not `is_global`.
_NAMED: tuple[tuple[str, tuple[Network, ...]], ...] = tuple(
    (why, tuple(ip_network(n) for n in nets))
    for why, nets in (
        ("cloud metadata", ("169.254.169.254/32", "fd00:ec2::254/128", "100.100.100.200/32")),
        ("this network", ("0.0.0.0/8",)),
        ("carrier-grade NAT", ("100.64.0.0/10",)),
        ("private", ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")),
        ("documentation", ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")),
        ("benchmarking", ("198.18.0.0/15", "2001:2::/48")),
        ("broadcast", ("255.255.255.255/32",)),
        # IETF protocol assignments and the old 6to4 relays, which ipaddress counts as global in part
        ("reserved", ("192.0.0.0/24", "192.88.99.0/24")),
    )
)
_NAT64 = ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class Target:
    """One request's destination: scheme, host in normal form, port, request target."""

    scheme: str
    host: str  # a normal host name, or an address without brackets
    port: int
    target: str  # path and query, as sent on the request line
    ip: IPAddress | None = None  # the host, when it is an address

    @property
    def authority(self) -> str:
        """The Host header: the host (IPv6 in brackets), and the port if not the scheme's."""
        host = f"[{self.host}]" if isinstance(self.ip, IPv6Address) else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}{self.target}"

    @property
    def redacted(self) -> str:
        """Scheme, host and path: what records keep (a query string may hold a secret)."""
        return f"{self.scheme}://{self.authority}{self.target.partition('?')[0]}"


@dataclass(frozen=True)
class Policy:
    """Who may be reached: the operator's exemptions and blocks, a tenant's allowlist."""

    allowed_networks: tuple[Network, ...] = ()  # FETCH_ALLOWED_NETWORKS
    blocked_hosts: tuple[str, ...] = ()  # FETCH_BLOCKED_HOSTS, host patterns
    tenant_hosts: tuple[str, ...] | None = field(default=None)  # None: no allowlist


def bad_url(why: str) -> FetchError:
    return FetchError("bad_request", f"fetch: invalid URL: {why}")


def parse_url(url: str) -> Target:
    """An absolute http(s) URL as a Target; FetchError ("invalid URL") for anything else.

    The URL itself is never echoed in the message: its query string may hold a secret."""
    url = url.strip()
    if _CONTROL.search(url):
        raise bad_url("it contains a control character or a backslash")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # an unclosed [
        raise bad_url("a bracketed IPv6 host is not closed") from exc
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise bad_url(f"only http and https URLs may be fetched, not {scheme + ':' if scheme else 'a relative URL'}")
    if not url[len(scheme) + 1 :].startswith("//") or not parts.netloc:
        raise bad_url("it has no host")
    if "@" in parts.netloc:
        raise bad_url("user names and passwords in the URL are not allowed; send an Authorization header")
    host, port = _split_netloc(parts.netloc, DEFAULT_PORTS[scheme])
    name, ip = parse_host(host)
    target = quote(parts.path or "/", safe=PATH_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=QUERY_SAFE)
    return Target(scheme, name, port, target, ip)


def _split_netloc(netloc: str, default_port: int) -> tuple[str, int]:
    if netloc.startswith("["):
        host, bracket, rest = netloc[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise bad_url("a bracketed IPv6 host is not closed")
        host = f"[{host}]"
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = netloc.partition(":")
    if not port_text:
        return host, default_port
    if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise bad_url(f"the port {port_text!r} is not a number from 1 to 65535")
    return host, int(port_text)


def parse_host(host: str) -> tuple[str, IPAddress | None]:
    """The host in normal form and, when it spells an address in any form, that address."""
    if host.startswith("["):
        try:
            if "%" in host:
                raise ValueError("a zone id")
            ip = IPv6Address(host[1:-1])
        except ValueError as exc:
            raise bad_url(f"{host} is not an IPv6 address") from exc
        return str(ip), ip
    try:
        name = normal_name(unquote(host))
    except ValueError as exc:
        raise bad_url(str(exc)) from exc
    if _ends_in_number(name):
        ip4 = _parse_ipv4(name)
        return str(ip4), ip4
    return name, None


def _ends_in_number(name: str) -> bool:
    """WHATWG's "ends in a number": such a host is an IPv4 address or no valid host at all."""
    last = name.split(".")[-1]
    return last.isdigit() or (last.startswith("0x") and all(c in "0123456789abcdef" for c in last[2:]))


def _parse_ipv4(name: str) -> IPv4Address:
    """WHATWG's IPv4 parser: 1 to 4 parts, each decimal, octal (leading 0) or hex (0x); the
    last part fills the remaining bytes (`127.1` is 127.0.0.1, `2130706433` too)."""
    parts = name.split(".")
    if len(parts) > 4:
        raise bad_url(f"{name} is not a valid IPv4 address")
    numbers = [_ipv4_number(part, name) for part in parts]
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        raise bad_url(f"{name} is not a valid IPv4 address")
    value = numbers[-1] + sum(n * 256 ** (3 - i) for i, n in enumerate(numbers[:-1]))
    return IPv4Address(value)


def _ipv4_number(part: str, name: str) -> int:
    try:
        if part.startswith("0x"):
            return int(part[2:] or "0", 16)
        if len(part) > 1 and part.startswith("0"):
            return int(part[1:], 8)
        return int(part, 10)
    except ValueError as exc:
        raise bad_url(f"{name} is not a valid IPv4 address") from exc


def embedded_ipv4(ip: IPv6Address) -> tuple[str, IPv4Address] | None:
    """The IPv4 address an IPv6 one reaches through a translation, and the translation's name."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip in _NAT64:
        return "NAT64", IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    return None


def blocked_reason(ip: IPAddress, allowed: tuple[Network, ...] = ()) -> str | None:
    """Why `ip` may not be reached, or None when it may: public (`is_global`, not multicast,
    reserved or unspecified) or inside a network of `allowed` (FETCH_ALLOWED_NETWORKS)."""
    if any(ip.version == net.version and ip in net for net in allowed):
        return None
    if isinstance(ip, IPv6Address) and (embedded := embedded_ipv4(ip)):
        kind, ip4 = embedded
        why = blocked_reason(ip4, allowed)
        return f"{why}, {kind} {ip4}" if why else None
    if ip.is_unspecified:
        return "unspecified"
    for why, networks in _NAMED:
        if any(ip.version == net.version and ip in net for net in networks):
            return why
    for why, flag in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("site-local", isinstance(ip, IPv6Address) and ip.is_site_local),
        ("not public", not ip.is_global),
    ):
        if flag:
            return why
    return None


def check_address(ip: IPAddress, host: str, policy: Policy) -> None:
    why = blocked_reason(ip, policy.allowed_networks)
    if why:
        raise FetchError("blocked", f"fetch: blocked address {ip} ({why}) for {host}")


def check_host(target: Target, policy: Policy) -> None:
    """The checks on the host as written, before any resolution; an address host is checked
    as an address here too."""
    if host_matches(target.host, policy.blocked_hosts):
        raise FetchError("blocked", f"fetch: host {target.host} is blocked by the platform's operator")
    if policy.tenant_hosts is not None and not host_matches(target.host, policy.tenant_hosts):
        raise FetchError("blocked", f"fetch: host {target.host} is not on this tenant's list of allowed hosts")
    if target.ip is not None:
        check_address(target.ip, target.host, policy)


def as_address(value: str) -> IPAddress:
    """An address as getaddrinfo gives it (an IPv6 one may carry a `%zone`)."""
    return ip_address(value.partition("%")[0])
