"""One `fetch` call: the guard on every hop, redirects, limits, and what is kept of it.

urllib3's connection classes carry each exchange (connection.py picks the address); this
module follows redirects itself, so that every hop is parsed, resolved and checked again.
"""

import re
import socket
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

from urllib3 import HTTPResponse

from webapp.config import FetchSettings
from worker.fetch.connection import deadline_guard, open_connection, resolve, timeout_message
from worker.fetch.errors import FetchError
from worker.fetch.guard import Policy, Target, check_host, parse_url

MAX_REDIRECTS = 5
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
REDIRECT_MODES = ("follow", "manual", "error")
READ_CHUNK = 64 * 1024
# An answer's headers, names and values: beside a body at the cap, an answer still crosses the
# sandbox channel whole (http.client alone lets 100 lines of 64 KiB through).
MAX_HEADER_BYTES = 256 * 1024
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_FORBIDDEN_METHODS = {"CONNECT", "TRACE", "TRACK"}
_NORMAL_METHODS = {"DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT"}
# Set by the client itself: a script's own would contradict the exchange it describes.
_CLIENT_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te"}
_BODY_HEADERS = {"content-type", "content-encoding", "content-language", "content-location"}


@dataclass(frozen=True)
class Request:
    url: str
    method: str = "GET"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None
    redirect: str = "follow"
    timeout_ms: float | None = None  # may only shorten the platform's timeout


@dataclass(frozen=True)
class Response:
    status: int
    status_text: str
    url: str
    redirected: bool
    headers: list[tuple[str, str]]  # names in lower case, in the order received
    body: bytes
    duration_ms: int

    @property
    def bytes(self) -> int:
        return len(self.body)


@dataclass
class _Hop:
    target: Target
    method: str
    headers: list[tuple[str, str]]
    body: bytes | None


def fetch(
    request: Request, settings: FetchSettings, policy: Policy, deadline: float, ca_certs: str | None = None
) -> Response:
    """Send `request` and read its answer, or raise FetchError with the message the script sees.

    `deadline` (time.monotonic) is the run's: the call ends by it, and by its own timeout."""
    started = time.monotonic()
    timeout = float(settings.timeout_seconds)
    if request.timeout_ms is not None and request.timeout_ms > 0:
        timeout = min(timeout, request.timeout_ms / 1000)
    end = min(deadline, started + timeout)
    if request.redirect not in REDIRECT_MODES:
        modes = '"follow", "manual" or "error"'
        raise FetchError("bad_request", f"fetch: redirect must be {modes}, not {request.redirect!r}")
    hop = _Hop(parse_url(request.url), _method(request.method), _headers(request.headers), request.body)
    if hop.body is not None:
        if hop.method in ("GET", "HEAD"):
            raise FetchError("bad_request", f"fetch: a {hop.method} request cannot have a body")
        if len(hop.body) > settings.max_body_bytes:
            raise FetchError(
                "body_too_large",
                f"fetch: the request body is {len(hop.body)} bytes, over the limit of {settings.max_body_bytes}",
            )
    cap = settings.max_response_kb * 1024
    for redirects in range(MAX_REDIRECTS + 1):
        sock, answer = _exchange(hop, policy, end, ca_certs)
        location = answer.headers.get("location")
        if answer.status not in REDIRECT_STATUSES or location is None or request.redirect == "manual":
            return _response(sock, answer, hop.target, redirects > 0, cap, end, started)
        _close(sock, answer)  # the redirect's body is not wanted
        if request.redirect == "error":
            raise FetchError("redirect", f'fetch: {hop.target.host} answered a redirect, and redirect is "error"')
        if redirects == MAX_REDIRECTS:
            raise FetchError("redirect", f"fetch: too many redirects (more than {MAX_REDIRECTS})")
        hop = _next_hop(hop, answer.status, location)
    raise AssertionError("unreachable")


def _method(method: str) -> str:
    if not _TOKEN.match(method):
        raise FetchError("bad_request", f"fetch: {method!r} is not a valid HTTP method")
    if method.upper() in _FORBIDDEN_METHODS:
        raise FetchError("bad_request", f"fetch: the method {method.upper()} is not allowed")
    return method.upper() if method.upper() in _NORMAL_METHODS else method


def _headers(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    for name, value in headers:
        if not _TOKEN.match(name):
            raise FetchError("bad_request", f"fetch: {name!r} is not a valid header name")
        value = value.strip(" \t")
        if any(c in value for c in "\r\n\0"):
            raise FetchError("bad_request", f"fetch: the value of header {name} has a line break or a NUL")
        if not all(ord(c) < 256 for c in value):  # HTTP/1.1 sends header values as Latin-1
            raise FetchError("bad_request", f"fetch: the value of header {name} has a character outside Latin-1")
        if name.lower() not in _CLIENT_HEADERS:
            out.append((name, value))
    return out


def _exchange(hop: _Hop, policy: Policy, end: float, ca_certs: str | None) -> tuple[socket.socket, HTTPResponse]:
    """Check the hop, connect to a vetted address, send the request, read the status and
    headers. The body is left to read, within the same deadline, from the socket returned:
    the connection lets go of it once the answer says the connection will close."""
    check_host(hop.target, policy)
    addresses = resolve(hop.target, policy, end)
    conn = open_connection(hop.target, addresses, end, ca_certs)
    sock = conn.sock
    headers = [("Host", hop.target.authority), *hop.headers]
    names = {name.lower() for name, _ in headers}
    if "user-agent" not in names:
        headers.append(("User-Agent", "script-runner-fetch"))
    if hop.body is not None and "content-type" not in names:
        headers.append(("Content-Type", "text/plain;charset=UTF-8"))
    try:
        with deadline_guard(sock, hop.target.host, end):
            conn.request(
                hop.method,
                hop.target.target,
                body=hop.body,
                headers=_header_dict(headers),
                preload_content=False,
                decode_content=True,
            )
            answer = conn.getresponse()
    except BaseException:
        sock.close()
        raise
    return sock, answer


def _header_dict(headers: list[tuple[str, str]]) -> dict[str, str]:
    """http.client takes a mapping: repeated names are joined as RFC 9110 allows."""
    out: dict[str, str] = {}
    for name, value in headers:
        key = next((k for k in out if k.lower() == name.lower()), name)
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _close(sock: socket.socket, answer: HTTPResponse) -> None:
    answer.close()
    sock.close()


def _response(
    sock: socket.socket, answer: HTTPResponse, target: Target, redirected: bool, cap: int, end: float, started: float
) -> Response:
    headers = [(name.lower(), value) for name, value in answer.headers.items()]
    try:
        if sum(len(name) + len(value) for name, value in headers) > MAX_HEADER_BYTES:
            limit = f"{MAX_HEADER_BYTES // 1024} KiB"
            raise FetchError("too_large", f"fetch: the headers of {target.host}'s answer are over the limit of {limit}")
        body = _read_capped(sock, answer, target.host, cap, end)
    finally:
        _close(sock, answer)
    return Response(
        status=answer.status,
        status_text=answer.reason or "",
        url=target.url,
        redirected=redirected,
        headers=headers,
        body=body,
        duration_ms=round((time.monotonic() - started) * 1000),
    )


def _read_capped(sock: socket.socket, answer: HTTPResponse, host: str, cap: int, end: float) -> bytes:
    """The body, decoded, read in chunks: never more than cap + 1 bytes are held."""
    too_large = FetchError("too_large", f"fetch: the answer of {host} is over the limit of {cap // 1024} KiB")
    length = answer.headers.get("content-length", "")
    if length.isascii() and length.isdigit() and int(length) > cap:  # not "²": isdigit, yet no int
        raise too_large
    chunks: list[bytes] = []
    total = 0
    with deadline_guard(sock, host, end):
        while chunk := answer.read(min(READ_CHUNK, cap + 1 - total), decode_content=True):
            total += len(chunk)
            if total > cap:
                raise too_large
            chunks.append(chunk)
            if time.monotonic() >= end:
                raise FetchError("timeout", timeout_message(host))
    return b"".join(chunks)


def _next_hop(hop: _Hop, status: int, location: str) -> _Hop:
    """The request a redirect asks for, as WHATWG fetch makes it."""
    where = f"fetch: {hop.target.host} redirected to an invalid URL"
    try:
        target = parse_url(urljoin(hop.target.url, location))
    except ValueError as exc:  # urljoin cannot split it (an unclosed [)
        raise FetchError("redirect", f"{where}: a bracketed IPv6 host is not closed") from exc
    except FetchError as exc:
        raise FetchError("redirect", exc.message.replace("fetch: invalid URL", where, 1)) from exc
    method, body, headers = hop.method, hop.body, hop.headers
    if (status in (301, 302) and method == "POST") or (status == 303 and method not in ("GET", "HEAD")):
        method, body = "GET", None
        headers = [(n, v) for n, v in headers if n.lower() not in _BODY_HEADERS]
    if (target.scheme, target.host, target.port) != (hop.target.scheme, hop.target.host, hop.target.port):
        headers = [(n, v) for n, v in headers if n.lower() not in ("authorization", "cookie")]
    return _Hop(target, method, headers, body)


def summary(method: str, url: str, outcome: Response | FetchError, duration_ms: int) -> dict[str, Any]:
    """What the execution keeps of one call: never the query string, never a body."""
    try:
        where = parse_url(url).redacted
    except FetchError:
        where = "(invalid URL)"
    record: dict[str, Any] = {"method": method.upper(), "url": where, "duration_ms": duration_ms}
    if isinstance(outcome, Response):
        record.update(status=outcome.status, bytes=outcome.bytes)
    else:
        record.update(error=outcome.kind, bytes=0)
    return record
