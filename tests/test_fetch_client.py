"""The fetch client against loopback upstreams (docs/fetch-guard.md): success with the upstream exempted
(FETCH_ALLOWED_NETWORKS), refusals with the defaults, redirects, limits, broken upstreams.

The exempted upstream listens on 127.0.0.1, the other one on 127.0.0.2: an exemption names
networks, not ports. Nothing here connects anywhere but loopback.
"""

import json
import socket
import time
import tracemalloc
from collections.abc import Iterator
from ipaddress import ip_network

import pytest

from tests.fetch_upstream import FakeResolver, Upstream, gzip_bomb, self_signed, upstream
from webapp.config import FetchSettings
from worker.fetch.client import Request, Response, fetch, summary
from worker.fetch.errors import FetchError
from worker.fetch.guard import Policy

pytestmark = pytest.mark.slow  # each test starts loopback servers

EXEMPT = Policy(allowed_networks=(ip_network("127.0.0.1/32"),))
DEFAULTS = Policy()
SETTINGS = FetchSettings(max_response_kb=64, timeout_seconds=5)


@pytest.fixture
def server() -> Iterator[Upstream]:
    with upstream("127.0.0.1") as s:
        yield s


@pytest.fixture
def other() -> Iterator[Upstream]:
    """Not exempted: no request may ever reach it."""
    with upstream("127.0.0.2") as s:
        yield s


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> FakeResolver:
    fake = FakeResolver(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


def go(url: str, policy: Policy = EXEMPT, seconds: float = 10, settings: FetchSettings = SETTINGS, **kw) -> Response:
    return fetch(Request(url, **kw), settings, policy, time.monotonic() + seconds)


def refused(url: str, policy: Policy = EXEMPT, seconds: float = 10, **kw) -> FetchError:
    with pytest.raises(FetchError) as caught:
        go(url, policy, seconds, **kw)
    return caught.value


def echoed(response: Response) -> dict:
    return json.loads(response.body)


def test_get_with_headers_both_ways(server: Upstream):
    r = go(f"{server.origin}/echo?page=2", headers=[("X-Custom", "one"), ("Accept", "application/json")])
    assert (r.status, r.status_text, r.redirected) == (200, "OK", False)
    assert r.url == f"{server.origin}/echo?page=2"
    sent = echoed(r)
    assert sent["method"] == "GET" and sent["path"] == "/echo?page=2"
    assert sent["headers"]["X-Custom"] == "one"
    assert sent["headers"]["Host"] == server.origin.removeprefix("http://")
    assert ("x-reply", "yes") in r.headers
    assert [v for n, v in r.headers if n == "set-cookie"] == ["a=1", "b=2"]
    assert r.bytes == len(r.body) and r.duration_ms >= 0


def test_post_json(server: Upstream):
    payload = json.dumps({"text": "héllo"}).encode()
    r = go(
        f"{server.origin}/echo",
        method="post",
        headers=[("Content-Type", "application/json")],
        body=payload,
    )
    sent = echoed(r)
    assert sent["method"] == "POST" and json.loads(sent["body"]) == {"text": "héllo"}
    assert sent["headers"]["Content-Type"] == "application/json"


@pytest.mark.parametrize("status", [201, 204, 404, 500])
def test_status_codes_are_answers(server: Upstream, status: int):
    r = go(f"{server.origin}/echo?status={status}")
    assert r.status == status


def test_redirect_followed(server: Upstream):
    r = go(f"{server.origin}/redirect?to=/echo%3Fx%3D1")
    assert (r.status, r.redirected, r.url) == (200, True, f"{server.origin}/echo?x=1")


def test_redirect_303_turns_post_into_get_and_307_keeps_it(server: Upstream):
    body = b'{"a": 1}'
    after_303 = echoed(go(f"{server.origin}/redirect?code=303&to=/echo", method="POST", body=body))
    assert (after_303["method"], after_303["body"]) == ("GET", "")
    after_307 = echoed(go(f"{server.origin}/redirect?code=307&to=/echo", method="POST", body=body))
    assert (after_307["method"], after_307["body"]) == ("POST", body.decode())


def test_redirect_manual_returns_the_3xx(server: Upstream):
    r = go(f"{server.origin}/redirect?to=/echo", redirect="manual")
    assert (r.status, r.redirected) == (302, False)
    assert ("location", "/echo") in r.headers
    assert server.seen == ["GET /redirect?to=/echo"]


def test_redirect_error_rejects(server: Upstream):
    error = refused(f"{server.origin}/redirect?to=/echo", redirect="error")
    assert error.kind == "redirect" and 'redirect is "error"' in str(error)
    assert server.seen == ["GET /redirect?to=/echo"]


def test_too_many_redirects(server: Upstream):
    error = refused(f"{server.origin}/loop")
    assert str(error) == "fetch: too many redirects (more than 5)"
    assert len(server.seen) == 6


def test_redirect_to_a_blocked_address_never_reaches_it(server: Upstream, other: Upstream):
    error = refused(f"{server.origin}/redirect?to={other.origin}/echo")
    assert str(error) == "fetch: blocked address 127.0.0.2 (loopback) for 127.0.0.2"
    assert other.seen == []


def test_cross_origin_redirect_drops_authorization(server: Upstream, resolver: FakeResolver):
    resolver.answers["other.test"] = [["127.0.0.1"]]
    port = server.server_address[1]
    headers = [("Authorization", "Bearer s3cret"), ("X-Keep", "1")]
    same = echoed(go(f"{server.origin}/redirect?to=/echo", headers=headers))
    assert same["headers"]["Authorization"] == "Bearer s3cret"
    moved = echoed(go(f"{server.origin}/redirect?to=http://other.test:{port}/echo", headers=headers))
    assert "Authorization" not in moved["headers"] and moved["headers"]["X-Keep"] == "1"
    assert moved["headers"]["Host"] == f"other.test:{port}"


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "[::1]",
        "0.0.0.0",  # noqa: S104 (a URL host, not a bind)
        "127.1",
        "2130706433",
        "0x7f.0.0.1",
        "0177.0.0.1",
        "[::ffff:127.0.0.1]",
    ],
)
def test_loopback_in_any_spelling_refused_by_default(server: Upstream, host: str):
    port = server.server_address[1]
    error = refused(f"http://{host}:{port}/echo", DEFAULTS)
    assert error.kind == "blocked" and str(error).startswith("fetch: blocked address ")
    assert server.seen == []


def test_name_resolving_to_loopback_refused(server: Upstream, resolver: FakeResolver):
    resolver.answers["loop.test"] = [["127.0.0.1"]]
    error = refused(f"http://loop.test:{server.server_address[1]}/", DEFAULTS)
    assert str(error) == "fetch: blocked address 127.0.0.1 (loopback) for loop.test"
    assert server.seen == []


def test_one_blocked_address_among_several_refuses(server: Upstream, resolver: FakeResolver):
    resolver.answers["mixed.test"] = [["127.0.0.1", "127.0.0.2"]]
    error = refused(f"http://mixed.test:{server.server_address[1]}/")
    assert str(error) == "fetch: blocked address 127.0.0.2 (loopback) for mixed.test"
    assert server.seen == []


def test_rebinding_cannot_swap_the_vetted_address(server: Upstream, other: Upstream, resolver: FakeResolver):
    """The name is looked up once; the connection goes to that (vetted) answer, never to the
    blocked one a second lookup would give."""
    resolver.answers["rebind.test"] = [["127.0.0.1"], ["127.0.0.2"]]
    r = go(f"http://rebind.test:{server.server_address[1]}/echo")
    assert r.status == 200 and server.seen == ["GET /echo"]
    assert resolver.calls["rebind.test"] == 1
    assert other.seen == []


def test_dns_failure(resolver: FakeResolver):
    resolver.answers["nowhere.test"] = [[]]
    assert str(refused("http://nowhere.test/")) == "fetch: cannot resolve host nowhere.test"


def test_connection_refused():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    error = refused(f"http://127.0.0.1:{port}/")
    assert str(error) == "fetch: connection refused by 127.0.0.1"


def test_connection_reset(server: Upstream):
    error = refused(f"{server.origin}/reset")
    assert error.kind == "connection" and "reset" in str(error)


def test_upstream_that_hangs_times_out_by_the_deadline(server: Upstream):
    started = time.monotonic()
    error = refused(f"{server.origin}/hang", seconds=0.5)
    assert str(error) == "fetch: 127.0.0.1 did not answer in time"
    assert time.monotonic() - started < 2


def test_timeout_ms_shortens_the_timeout(server: Upstream):
    started = time.monotonic()
    assert refused(f"{server.origin}/hang", timeout_ms=300).kind == "timeout"
    assert time.monotonic() - started < 1.5


def test_trickling_upstream_ends_at_the_deadline(server: Upstream):
    """A byte every 50 ms keeps every socket read alive: only the total deadline stops it."""
    started = time.monotonic()
    assert refused(f"{server.origin}/trickle", seconds=0.6).kind == "timeout"
    assert time.monotonic() - started < 2


def test_response_over_the_cap_is_cut(server: Upstream):
    tracemalloc.start()
    try:
        error = refused(f"{server.origin}/big")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(error) == "fetch: the answer of 127.0.0.1 is over the limit of 64 KiB"
    assert peak < 1024 * 1024  # a 1 GiB answer; the client holds at most the cap and a chunk


def test_compressed_answer_is_capped_after_decoding(server: Upstream):
    gzip_bomb()  # made before memory is traced: only the client's is
    tracemalloc.start()
    try:
        error = refused(f"{server.origin}/gzip", headers=[("Accept-Encoding", "gzip")])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert error.kind == "too_large"
    assert peak < 2 * 1024 * 1024  # 64 MiB once inflated


def test_declared_length_over_the_cap_refused_before_reading(server: Upstream):
    assert refused(f"{server.origin}/big?declare=1").kind == "too_large"


def test_request_body_over_the_cap(server: Upstream):
    error = refused(f"{server.origin}/echo", method="POST", body=b"x" * (SETTINGS.max_body_bytes + 1))
    assert error.kind == "body_too_large"
    assert server.seen == []


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"headers": [("X-Bad", "a\r\nInjected: 1")]}, "fetch: the value of header X-Bad has a line break or a NUL"),
        ({"headers": [("X-Emoji", "☃")]}, "fetch: the value of header X-Emoji has a character outside Latin-1"),
        ({"headers": [("Bad Name", "1")]}, "fetch: 'Bad Name' is not a valid header name"),
        ({"method": "TRACE"}, "fetch: the method TRACE is not allowed"),
        ({"method": "GET", "body": b"x"}, "fetch: a GET request cannot have a body"),
        ({"redirect": "follow-me"}, 'fetch: redirect must be "follow", "manual" or "error", not \'follow-me\''),
    ],
)
def test_bad_requests_never_sent(server: Upstream, kw: dict, message: str):
    error = refused(f"{server.origin}/echo", **kw)
    assert (error.kind, str(error)) == ("bad_request", message)
    assert server.seen == []


def test_summary_keeps_no_query_string(server: Upstream):
    url = f"{server.origin}/echo?token=s3cret"
    r = go(url)
    record = summary("get", url, r, r.duration_ms)
    assert record == {
        "method": "GET",
        "url": f"{server.origin}/echo",
        "status": 200,
        "bytes": r.bytes,
        "duration_ms": r.duration_ms,
    }
    failed = summary("GET", url, FetchError("timeout", "fetch: x"), 12)
    assert failed == {
        "method": "GET",
        "url": f"{server.origin}/echo",
        "error": "timeout",
        "bytes": 0,
        "duration_ms": 12,
    }


def test_tls_verifies_the_host_name_not_the_address(tmp_path, resolver: FakeResolver):
    cert, key = self_signed(tmp_path, "localhost")
    resolver.answers["localhost"] = [["127.0.0.1"]]
    resolver.answers["other.test"] = [["127.0.0.1"]]
    with upstream("127.0.0.1", tls=(cert, key)) as tls:
        port = tls.server_address[1]
        deadline = time.monotonic() + 10
        r = fetch(Request(f"https://localhost:{port}/echo"), SETTINGS, EXEMPT, deadline, ca_certs=str(cert))
        assert r.status == 200 and echoed(r)["headers"]["Host"] == f"localhost:{port}"
        with pytest.raises(FetchError) as caught:
            fetch(Request(f"https://other.test:{port}/echo"), SETTINGS, EXEMPT, deadline, ca_certs=str(cert))
        assert caught.value.kind == "tls"
        assert str(caught.value).startswith("fetch: TLS error with other.test: ")
        with pytest.raises(FetchError) as untrusted:  # the system's trust store does not know it
            fetch(Request(f"https://localhost:{port}/echo"), SETTINGS, EXEMPT, deadline)
        assert untrusted.value.kind == "tls"
        assert tls.seen == ["GET /echo"]
