"""Loopback upstreams for the fetch tests: an HTTP(S) server whose paths misbehave on demand,
a self-signed certificate, and a resolver that answers names with chosen loopback addresses.

Traffic stays on loopback (docs/fetch-guard.md): servers bind 127.0.0.x only.
"""

import datetime
import json
import socket
import ssl
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

GIB = 1024**3
JSON = (("Content-Type", "application/json"),)


class Upstream(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: str):
        super().__init__((address, 0), Handler)
        self.seen: list[str] = []  # request lines, in order
        self.stop = threading.Event()
        self.sent = 0  # bytes of body written by /big
        self.slow_now = self.slow_most = 0  # /slow requests being answered, and the most at once
        self.lock = threading.Lock()

    @property
    def origin(self) -> str:
        scheme = "https" if isinstance(self.socket, ssl.SSLSocket) else "http"
        host, port = self.server_address[:2]
        return f"{scheme}://{host}:{port}"


class Handler(BaseHTTPRequestHandler):
    server: Upstream

    def log_message(self, *args) -> None:
        pass

    def _route(self) -> None:
        self.server.seen.append(f"{self.command} {self.path}")
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        handler = "do_" + url.path.strip("/").replace("/", "_")
        first = "do_" + url.path.strip("/").split("/")[0]  # /users/2: do_users
        getattr(self, handler, getattr(self, first, self.do_echo))(query)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _route

    def _send(self, status: int, body: bytes = b"", headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_echo(self, query: dict) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        answer = {"method": self.command, "path": self.path, "headers": dict(self.headers.items()), "body": body}
        extra = (("X-Reply", "yes"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Content-Type", "application/json"))
        self._send(int(query.get("status", 200)), json.dumps(answer).encode(), extra)

    def do_users(self, query: dict) -> None:
        """/users/<id>: a user as an API answers one (docs/scripting.md's examples)."""
        user_id = int(urlsplit(self.path).path.rsplit("/", 1)[-1])
        self._send(200, json.dumps({"id": user_id, "name": f"User {user_id}"}).encode(), JSON)

    def do_items(self, query: dict) -> None:
        """Three pages of two items, each linking to the next page (absolute), the last to null."""
        page = int(query.get("page", 1))
        following = f"{self.server.origin}/items?page={page + 1}" if page < 3 else None
        answer = {"items": [2 * page - 1, 2 * page], "next": following}
        self._send(200, json.dumps(answer).encode(), JSON)

    def do_redirect(self, query: dict) -> None:
        self._send(int(query.get("code", 302)), b"moved", (("Location", query["to"]),))

    def do_loop(self, query: dict) -> None:
        self._send(302, headers=(("Location", "/loop"),))

    def do_big(self, query: dict) -> None:
        """Up to 1 GiB with no length (the end is the connection's close), or declared."""
        self.send_response(200)
        if "declare" in query:
            self.send_header("Content-Length", str(GIB))
        self.end_headers()
        chunk = b"x" * 65536
        try:
            while self.server.sent < GIB and not self.server.stop.is_set():
                self.wfile.write(chunk)
                self.server.sent += len(chunk)
        except OSError:
            pass  # the client hung up at its cap

    def do_gzip(self, query: dict) -> None:
        self._send(200, gzip_bomb(), (("Content-Encoding", "gzip"),))

    def do_bytes(self, query: dict) -> None:
        """`n` bytes, each the byte `fill` (hex): 0xff is never valid UTF-8. With `pad`: as many
        headers, each of `pad_kb` KiB of that byte too."""
        fill = bytes.fromhex(query.get("fill", "78"))
        pad = fill.decode("latin-1") * (int(query.get("pad_kb", 0)) * 1024)
        headers = tuple((f"X-Pad-{i}", pad) for i in range(int(query.get("pad", 0))))
        self._send(200, fill * int(query["n"]), headers)

    def do_raw(self, query: dict) -> None:
        """The answer written as `answer` says, byte for byte (latin-1)."""
        self.wfile.write(query["answer"].encode("latin-1"))

    def do_slow(self, query: dict) -> None:
        """Answers as /echo does, after `ms` milliseconds."""
        with self.server.lock:
            self.server.slow_now += 1
            self.server.slow_most = max(self.server.slow_most, self.server.slow_now)
        self.server.stop.wait(int(query.get("ms", 100)) / 1000)
        with self.server.lock:
            self.server.slow_now -= 1
        self.do_echo(query)

    def do_hang(self, query: dict) -> None:
        self.server.stop.wait(30)

    def do_trickle(self, query: dict) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            while not self.server.stop.wait(0.05):
                self.wfile.write(b"x")
                self.wfile.flush()
        except OSError:
            pass

    def do_reset(self, query: dict) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()  # with linger 0: a RST, not a FIN


@cache
def gzip_bomb() -> bytes:
    """64 MiB of zeros in about 64 KiB of gzip."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip format
    zeros = bytes(1024 * 1024)
    return b"".join(packer.compress(zeros) for _ in range(64)) + packer.flush()


@contextmanager
def upstream(address: str = "127.0.0.1", tls: tuple[Path, Path] | None = None) -> Iterator[Upstream]:
    server = Upstream(address)
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def self_signed(directory: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A certificate for `name`, its own CA: (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class FakeResolver:
    """Stands in for socket.getaddrinfo: names get the addresses queued for them (the last
    answer repeats), addresses are left to the real one. Counts the lookups of each name."""

    def __init__(self, real: Callable):
        self.real = real
        self.answers: dict[str, list[list[str]]] = {}
        self.calls: dict[str, int] = {}

    def __call__(self, host, port, *args, **kwargs):
        if host not in self.answers:
            return self.real(host, port, *args, **kwargs)
        self.calls[host] = self.calls.get(host, 0) + 1
        queue = self.answers[host]
        addresses = queue.pop(0) if len(queue) > 1 else queue[0]
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses
        ]
