"""Resolving a host once and connecting to a vetted address, under a hard deadline.

The host is resolved once, here; every address it resolves to is checked, and the call is
refused if ANY is blocked. Checking only the one we would use is not enough: a name that
mixes a public address with 127.0.0.1 is an attack (or a misconfiguration) either way, and
which address a client "uses" differs between clients and retries. The connection then goes
to a vetted address itself, never to the name, so no second lookup (DNS rebinding) can swap
it; TLS still sends the host name (SNI) and checks the certificate against it.
"""

import heapq
import http.client
import itertools
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, suppress
from contextvars import ContextVar

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import HTTPError, NewConnectionError, ProtocolError
from urllib3.util.ssl_match_hostname import CertificateError

from worker.fetch.errors import FetchError
from worker.fetch.guard import IPAddress, Policy, Target, as_address, check_address


def resolve(target: Target, policy: Policy, deadline: float) -> list[IPAddress]:
    """The host's addresses, each checked by the guard; FetchError if any is blocked."""
    if target.ip is not None:
        return [target.ip]  # checked with the host (guard.check_host)
    addresses = _lookup(target.host, target.port, deadline)
    for ip in addresses:
        check_address(ip, target.host, policy)
    return addresses


# getaddrinfo cannot be interrupted: a lookup the resolver never answers holds its thread until
# the resolver gives up, past its call. So lookups run in one pool per process, and one tenant
# may hold only a few of its threads with lookups still unanswered: its black-hole name server
# neither piles up threads run after run nor takes every thread from other tenants.
LOOKUP_THREADS = 16
LOOKUPS_PER_OWNER = 4
_lookups = ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="fetch-dns")
_unanswered: Counter[str | None] = Counter()
_unanswered_lock = threading.Lock()


def _lookup(host: str, port: int, deadline: float) -> list[IPAddress]:
    """The host's addresses from the system resolver, waited for no later than `deadline`."""
    abort = current.get()
    owner = abort.owner if abort is not None else None
    with _unanswered_lock:
        if _unanswered[owner] >= LOOKUPS_PER_OWNER:
            raise FetchError("timeout", f"fetch: looking up {host} timed out (earlier lookups are still unanswered)")
        _unanswered[owner] += 1

    def answered(_: Future) -> None:
        with _unanswered_lock:
            _unanswered[owner] -= 1

    future = _lookups.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    future.add_done_callback(answered)
    try:
        answer = future.result(timeout=max(deadline - time.monotonic(), 0))
    except FutureTimeout:
        future.cancel()  # one still queued never runs
        raise FetchError("timeout", f"fetch: looking up {host} timed out") from None
    except (OSError, UnicodeError):
        raise FetchError("dns", f"fetch: cannot resolve host {host}") from None
    if not answer:
        raise FetchError("dns", f"fetch: cannot resolve host {host}")
    addresses: list[IPAddress] = []
    for *_, sockaddr in answer:
        ip = as_address(sockaddr[0])
        if ip not in addresses:
            addresses.append(ip)
    return addresses


class Abort:
    """Ends every exchange of one run at once, when the run ends with calls still in flight:
    their sockets are shut as at their deadline. Set for a fetch's thread in `current`."""

    def __init__(self, owner: str | None = None) -> None:
        self.owner = owner  # whose calls: the tenant, which LOOKUPS_PER_OWNER counts by
        self.aborted = False
        self._dogs: set[Watchdog] = set()
        self._lock = threading.Lock()

    def watch(self, dog: "Watchdog") -> None:
        with self._lock:
            if not self.aborted:
                self._dogs.add(dog)
                return
        dog.fire()

    def forget(self, dog: "Watchdog") -> None:
        with self._lock:
            self._dogs.discard(dog)

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            dogs, self._dogs = list(self._dogs), set()
        for dog in dogs:
            dog.fire()


current: ContextVar[Abort | None] = ContextVar("fetch_abort", default=None)


class Watchdog:
    """Shuts a socket at the deadline. Socket timeouts bound each read, not the whole exchange:
    a server trickling a byte a second would never trip them.

    `sock` is called when the deadline comes: while connecting, the connection's socket is set
    only once TCP is up (and before the TLS handshake, so a slow handshake ends too)."""

    def __init__(self, sock: Callable[[], socket.socket | None], deadline: float):
        self.sock = sock
        self.fired = self.cancelled = False
        _alarms.add(deadline, self)
        self.abort = current.get()
        if self.abort is not None:
            self.abort.watch(self)

    def fire(self) -> None:
        if self.cancelled:
            return
        self.fired = True
        sock = self.sock()
        if sock is not None:
            with suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self.cancelled = True
        if self.abort is not None:
            self.abort.forget(self)


class _Alarms:
    """One thread fires every watchdog of the process at its deadline: a timer thread per
    exchange cost a thread start per call, the largest share of a fetching call's CPU in a
    busy worker. A cancelled watchdog stays in the heap until its deadline (at most the run's
    wall time) and is dropped then."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Watchdog]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, deadline: float, dog: Watchdog) -> None:
        with self._changed:
            heapq.heappush(self._heap, (deadline, next(self._order), dog))
            if self._thread is None:
                self._thread = threading.Thread(target=self._fire_when_due, name="fetch-deadlines", daemon=True)
                self._thread.start()
            if self._heap[0][2] is dog:  # sooner than the one the thread waits for
                self._changed.notify()

    def _fire_when_due(self) -> None:
        while True:
            with self._changed:
                while True:
                    while self._heap and self._heap[0][2].cancelled:
                        heapq.heappop(self._heap)
                    if self._heap and self._heap[0][0] <= time.monotonic():
                        break
                    self._changed.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, dog = heapq.heappop(self._heap)
            dog.fire()


_alarms = _Alarms()


def open_connection(
    target: Target, addresses: list[IPAddress], deadline: float, ca_certs: str | None = None
) -> HTTPConnection:
    """A connection to the first of `addresses` that answers, TLS verified for the host name."""
    failure: FetchError | None = None
    for ip in addresses:
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            break
        conn = _connection(target, ip, timeout, ca_certs)
        watchdog = Watchdog(lambda conn=conn: conn.sock, deadline)
        if watchdog.abort is not None and watchdog.abort.aborted:
            # The run ended while the host was looked up: its call connects nowhere, later.
            watchdog.cancel()
            raise FetchError("aborted", "fetch: the run ended first")
        try:
            conn.connect()
            return conn
        except Exception as exc:
            conn.close()
            failure = failure_of(exc, target.host, watchdog.fired)
            if failure.kind == "tls":
                raise failure from exc
        finally:
            watchdog.cancel()
    raise failure or FetchError("timeout", timeout_message(target.host))


def _connection(target: Target, ip: IPAddress, timeout: float, ca_certs: str | None) -> HTTPConnection:
    if target.scheme == "http":
        return HTTPConnection(str(ip), target.port, timeout=timeout)
    return HTTPSConnection(
        str(ip),
        target.port,
        timeout=timeout,
        cert_reqs="CERT_REQUIRED",
        ca_certs=ca_certs,  # None: the system's trust store
        # SNI, and with no assert_hostname the ssl module itself checks, during the handshake,
        # that the certificate names this host (not the address connected to).
        server_hostname=target.host,
    )


@contextmanager
def deadline_guard(sock: socket.socket, host: str, deadline: float) -> Iterator[None]:
    """Within: the socket is shut at the deadline; any failure becomes its FetchError."""
    watchdog = Watchdog(lambda: sock, deadline)
    try:
        yield
    except FetchError:
        raise
    except Exception as exc:
        raise failure_of(exc, host, watchdog.fired) from exc
    finally:
        watchdog.cancel()


def timeout_message(host: str) -> str:
    return f"fetch: {host} did not answer in time"


def failure_of(exc: BaseException, host: str, timed_out: bool = False) -> FetchError:
    """The FetchError for what went wrong on the wire, whatever layer raised it."""
    if timed_out:
        return FetchError("timeout", timeout_message(host))
    chain = list(_causes(exc))
    for cause in chain:
        if isinstance(cause, ssl.SSLError | ssl.CertificateError | CertificateError):
            reason = getattr(cause, "verify_message", None) or getattr(cause, "reason", None) or cause
            return FetchError("tls", f"fetch: TLS error with {host}: {reason}")
        if isinstance(cause, TimeoutError | socket.timeout):
            return FetchError("timeout", timeout_message(host))
        if isinstance(cause, ConnectionRefusedError):
            return FetchError("connection", f"fetch: connection refused by {host}")
        if isinstance(cause, ConnectionResetError | BrokenPipeError | http.client.RemoteDisconnected):
            return FetchError("connection", f"fetch: connection reset by {host}")
        if isinstance(cause, http.client.IncompleteRead):
            return FetchError("connection", f"fetch: {host} closed the connection before the end of its answer")
    if any(isinstance(cause, http.client.HTTPException | ProtocolError) for cause in chain):
        return FetchError("connection", f"fetch: {host} sent an invalid HTTP answer")
    if any(isinstance(cause, OSError | NewConnectionError | HTTPError) for cause in chain):
        return FetchError("connection", f"fetch: cannot connect to {host}")
    raise exc


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, what it wraps, and the errors urllib3 passes as arguments."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        todo += [a for a in current.args if isinstance(a, BaseException)]
