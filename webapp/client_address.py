"""The client's address: the one a trusted proxy forwarded, else the direct peer's.

Behind the TLS proxy of the README every request comes from the proxy's address, so whatever
keys on the address (the login throttle, an endpoint's `event.ip`) must read the address the
proxy appends to `X-Forwarded-For`. That header is written by whoever sends the request, so it
is believed only from peers in FORWARDED_ALLOW_IPS (gunicorn's own setting for the
`X-Forwarded-Proto` it believes), and only as far as trusted proxies vouch for it:

- the direct peer is trusted if it is in a listed address or network, if the list has `*`,
  or if it has no IP address at all (a Unix socket, as gunicorn decides too);
- from there the chain is read from its right end, where each proxy appended the address it
  saw: the first address that is not itself in a listed network is the client. `*` trusts
  any direct peer but no address inside the chain, so with one proxy the client is the
  address that proxy appended, whatever the client put in front of it;
- every address of the chain trusted: the leftmost is the client;
- an entry that is not an IP address (a proxy's `unknown`, garbage) ends the walk: the
  address the trusted hop connected from is kept.

Werkzeug's ProxyFix takes the n-th address from the right whoever sent the header, which lets
any client that reaches the app directly (gunicorn listens on 0.0.0.0) name its own address.

The middleware sets REMOTE_ADDR to the client's address, so everything downstream agrees;
the direct peer's stays in the environ under PEER_ADDR_KEY.
"""

from collections.abc import Iterable
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import TYPE_CHECKING

from flask import Request

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

PEER_ADDR_KEY = "script_runner.peer_addr"
DEFAULT_FORWARDED_ALLOW_IPS = ("127.0.0.1", "::1")  # gunicorn's default
ANY = "*"


def parse_allow_list(raw: str) -> tuple[str, ...]:
    """FORWARDED_ALLOW_IPS as gunicorn reads it: comma-separated addresses, CIDR networks
    (host bits unset) or `*`. Raises ValueError naming the bad entry."""
    entries = tuple(part.strip() for part in raw.split(",") if part.strip())
    for entry in entries:
        if entry != ANY:
            try:
                ip_network(entry)
            except ValueError as exc:
                raise ValueError(f"{entry!r} is not an IP address, a network or *: {exc}") from exc
    return entries


class TrustedProxies:
    def __init__(self, allow: Iterable[str]):
        allow = tuple(allow)
        self.any_peer = ANY in allow
        self.networks = tuple(ip_network(entry) for entry in allow if entry != ANY)
        self.trusts_peer = lru_cache(maxsize=1024)(self._trusts_peer)

    def client(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """The client's address, given the direct peer's and the X-Forwarded-For header."""
        if not forwarded_for or not self.trusts_peer(peer or ""):
            return peer
        client = peer
        for entry in reversed(forwarded_for.split(",")):
            address = _address(entry)
            if address is None:
                return client
            client = str(address)
            if not self._listed(address):
                return client
        return client

    def _trusts_peer(self, peer: str) -> bool:
        if self.any_peer:
            return True
        if not peer:
            return True  # a Unix socket's peer has no address: only local processes reach it
        address = _address(peer)
        return address is not None and self._listed(address)

    def _listed(self, address: IPv4Address | IPv6Address) -> bool:
        return any(address in network for network in self.networks)


def _address(text: str) -> IPv4Address | IPv6Address | None:
    """An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:443`."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped:  # a dual-stack socket's IPv4 peer
        return address.ipv4_mapped
    return address


class ClientAddressMiddleware:
    """WSGI middleware: REMOTE_ADDR becomes the client's address (see the module's doc)."""

    def __init__(self, app: "WSGIApplication", proxies: TrustedProxies):
        self.app, self.proxies = app, proxies

    def __call__(self, environ: "WSGIEnvironment", start_response: "StartResponse"):
        peer = environ.get("REMOTE_ADDR")
        environ[PEER_ADDR_KEY] = peer
        forwarded_for = environ.get("HTTP_X_FORWARDED_FOR")
        if forwarded_for:
            environ["REMOTE_ADDR"] = self.proxies.client(peer, forwarded_for)
        return self.app(environ, start_response)


def client_address(request: Request) -> str | None:
    """The address of whoever sent this request (set by ClientAddressMiddleware)."""
    return request.remote_addr or None
