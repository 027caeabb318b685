"""The fetch guard as pure functions (docs/fetch-guard.md): URL parsing, numeric host forms, address
classification, host patterns. Nothing here resolves a name or opens a socket."""

from ipaddress import ip_address, ip_network

import pytest

from worker.fetch.errors import FetchError
from worker.fetch.guard import Policy, blocked_reason, check_address, check_host, parse_url
from worker.fetch.hosts import host_matches, parse_host_patterns


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://2130706433/", "127.0.0.1"),
        ("http://0177.0.0.1/", "127.0.0.1"),
        ("http://0x7f.0.0.1/", "127.0.0.1"),
        ("http://0X7F.1/", "127.0.0.1"),
        ("http://127.1/", "127.0.0.1"),
        ("http://127.0.1/", "127.0.0.1"),
        ("http://0/", "0.0.0.0"),  # noqa: S104 (a URL host, not a bind)
        ("http://0x7f000001/", "127.0.0.1"),
        ("http://017700000001/", "127.0.0.1"),
        ("http://127.0.0.1./", "127.0.0.1"),
        ("http://%31%32%37.0.0.1/", "127.0.0.1"),
        ("http://[::ffff:127.0.0.1]/", "::ffff:7f00:1"),
        ("http://[::FFFF:7f00:1]/", "::ffff:7f00:1"),
        ("http://[64:ff9b::127.0.0.1]/", "64:ff9b::7f00:1"),
        ("http://[2002:7f00:1::]/", "2002:7f00:1::"),
        ("http://[::1]:8080/", "::1"),
    ],
)
def test_numeric_host_forms_are_normalised_and_refused(url: str, address: str):
    target = parse_url(url)
    assert str(target.ip) == address and target.host == address
    with pytest.raises(FetchError) as caught:
        check_host(target, Policy())
    assert caught.value.kind == "blocked"
    assert str(caught.value).startswith(f"fetch: blocked address {address} (")


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.255.254", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("ff0e::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "broadcast"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 (an address classified, not bound)
        ("::", "unspecified"),
        ("0.1.2.3", "this network"),
        ("192.0.2.1", "documentation"),
        ("2001:db8::1", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("fec0::1", "site-local"),
        ("192.0.0.8", "reserved"),
        ("192.88.99.1", "reserved"),
        ("100::1", "reserved"),
        ("2001::1", "not public"),  # Teredo,
        ("::ffff:10.0.0.1", "private, IPv4-mapped 10.0.0.1"),
        ("::ffff:169.254.169.254", "cloud metadata, IPv4-mapped 169.254.169.254"),
        ("64:ff9b::a9fe:a9fe", "cloud metadata, NAT64 169.254.169.254"),
        ("64:ff9b::192.168.0.1", "private, NAT64 192.168.0.1"),
        ("2002:a00:1::", "private, 6to4 10.0.0.1"),
        ("2002:7f00:1::1", "loopback, 6to4 127.0.0.1"),
    ],
)
def test_classification_of_addresses(address: str, why: str):
    assert blocked_reason(ip_address(address)) == why


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::8.8.8.8"]
)
def test_public_addresses_pass(address: str):
    assert blocked_reason(ip_address(address)) is None


def test_allowed_networks_exempt_only_what_they_name():
    allowed = (ip_network("10.20.0.0/16"), ip_network("127.0.0.1/32"))
    assert blocked_reason(ip_address("10.20.3.4"), allowed) is None
    assert blocked_reason(ip_address("127.0.0.1"), allowed) is None
    assert blocked_reason(ip_address("::ffff:10.20.3.4"), allowed) is None  # the same host
    assert blocked_reason(ip_address("10.21.0.1"), allowed) == "private"
    assert blocked_reason(ip_address("127.0.0.2"), allowed) == "loopback"
    assert blocked_reason(ip_address("169.254.169.254"), allowed) == "cloud metadata"


def test_blocked_address_message():
    with pytest.raises(FetchError) as caught:
        check_address(ip_address("169.254.169.254"), "metadata.example", Policy())
    assert str(caught.value) == "fetch: blocked address 169.254.169.254 (cloud metadata) for metadata.example"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/", "only http and https URLs may be fetched, not ftp:"),
        ("file:///etc/passwd", "only http and https URLs may be fetched, not file:"),
        ("javascript:alert(1)", "only http and https URLs may be fetched, not javascript:"),
        ("/relative", "only http and https URLs may be fetched, not a relative URL"),
        ("http:/example.com", "it has no host"),
        ("http://", "it has no host"),
        ("http://user:pw@example.com/", "user names and passwords in the URL are not allowed"),
        ("http://user@example.com/", "user names and passwords in the URL are not allowed"),
        ("http://example.com@127.0.0.1/", "user names and passwords in the URL are not allowed"),
        ("http://exa\\mple.com/", "it contains a control character or a backslash"),
        ("http://example.com/\r\nX: 1", "it contains a control character or a backslash"),
        ("http://example.com:99999/", "the port '99999' is not a number from 1 to 65535"),
        ("http://example.com:8o/", "the port '8o' is not a number from 1 to 65535"),
        ("http://1.2.3.4.5/", "1.2.3.4.5 is not a valid IPv4 address"),
        ("http://256.0.0.1/", "256.0.0.1 is not a valid IPv4 address"),
        ("http://08.0.0.1/", "08.0.0.1 is not a valid IPv4 address"),
        ("http://[::1/", "a bracketed IPv6 host is not closed"),
        ("http://[::1%25eth0]/", "[::1%25eth0] is not an IPv6 address"),
        ("http://exa_mple.com/", "'exa_mple.com' is not a valid host name"),
    ],
)
def test_bad_urls_refused_with_their_reason(url: str, message: str):
    with pytest.raises(FetchError) as caught:
        parse_url(url)
    assert caught.value.kind == "bad_request"
    assert str(caught.value).startswith(f"fetch: invalid URL: {message}")


def test_url_normalised():
    target = parse_url("HTTPS://Bücher.Example.:443/a b/ü?q=ü s#frag")
    assert (target.scheme, target.host, target.port) == ("https", "xn--bcher-kva.example", 443)
    assert target.url == "https://xn--bcher-kva.example/a%20b/%C3%BC?q=%C3%BC%20s"
    assert target.redacted == "https://xn--bcher-kva.example/a%20b/%C3%BC"
    assert parse_url("http://example.com:8080").authority == "example.com:8080"
    assert parse_url("http://[::1]:80").url == "http://[::1]/"


def test_host_patterns():
    patterns = parse_host_patterns(" api.Example.com, *.hooks.slack.com\n bücher.de. ")
    assert patterns == ("api.example.com", "*.hooks.slack.com", "xn--bcher-kva.de")
    assert host_matches("api.example.com", patterns)
    assert host_matches("a.b.hooks.slack.com", patterns)
    assert not host_matches("hooks.slack.com", patterns)
    assert not host_matches("evilhooks.slack.com", patterns)
    assert not host_matches("example.com", patterns)
    assert not host_matches("api.example.com.evil.io", patterns)
    assert parse_host_patterns("") == ()


@pytest.mark.parametrize("raw", ["*", "a.*.com", "http://x.com", "ok.com,exa_mple.com", "-x.com", "*."])
def test_bad_host_patterns_named(raw: str):
    with pytest.raises(ValueError, match="is not a host name or a"):
        parse_host_patterns(raw)


def test_blocked_hosts_and_the_tenant_allowlist():
    policy = Policy(blocked_hosts=parse_host_patterns("*.internal.example.com"))
    with pytest.raises(FetchError) as blocked:
        check_host(parse_url("https://db.internal.example.com/"), policy)
    assert str(blocked.value) == "fetch: host db.internal.example.com is blocked by the platform's operator"
    check_host(parse_url("https://api.example.com/"), policy)

    tenant = Policy(tenant_hosts=parse_host_patterns("api.github.com, *.slack.com"))
    check_host(parse_url("https://api.github.com/repos"), tenant)
    check_host(parse_url("https://hooks.slack.com/x"), tenant)
    for url in ("https://github.com/", "https://8.8.8.8/"):
        with pytest.raises(FetchError) as outside:
            check_host(parse_url(url), tenant)
        assert str(outside.value).endswith("is not on this tenant's list of allowed hosts")
