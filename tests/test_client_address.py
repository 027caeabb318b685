"""Which address is the client's, for each FORWARDED_ALLOW_IPS and X-Forwarded-For (the proxy
hop itself is tested in tests/security/test_client_address.py)."""

import pytest

from webapp.client_address import TrustedProxies, parse_allow_list
from webapp.config import Settings

CLIENT = "203.0.113.7"


@pytest.mark.parametrize(
    ("allow", "peer", "forwarded_for", "client"),
    [
        ("127.0.0.1,::1", "127.0.0.1", CLIENT, CLIENT),
        ("127.0.0.1,::1", "::1", CLIENT, CLIENT),
        ("127.0.0.1,::1", "::ffff:127.0.0.1", CLIENT, CLIENT),  # a dual-stack socket's IPv4 peer
        ("127.0.0.1,::1", "192.0.2.1", CLIENT, "192.0.2.1"),  # not a trusted peer: its header is ignored
        ("127.0.0.1", "127.0.0.1", f"6.6.6.6, {CLIENT}", CLIENT),  # what the client put in front is not believed
        ("127.0.0.1, 10.0.0.0/8", "127.0.0.1", f"6.6.6.6, {CLIENT}, 10.1.2.3", CLIENT),  # two trusted hops
        ("127.0.0.1, 10.0.0.0/8", "127.0.0.1", "10.0.0.5, 10.1.2.3", "10.0.0.5"),  # all trusted: the leftmost
        ("*", "192.0.2.1", f"6.6.6.6, {CLIENT}", CLIENT),  # any peer, but no address in the chain
        ("127.0.0.1", "127.0.0.1", f"{CLIENT}:5555", CLIENT),
        ("127.0.0.1", "127.0.0.1", "[2001:db8::7]:443", "2001:db8::7"),
        ("127.0.0.1", "127.0.0.1", "2001:db8::7", "2001:db8::7"),
        ("127.0.0.1", "127.0.0.1", "unknown", "127.0.0.1"),  # not an address: the peer's is kept
        ("127.0.0.1, 10.0.0.0/8", "127.0.0.1", "garbage, 10.1.2.3", "10.1.2.3"),
        ("127.0.0.1", "", CLIENT, CLIENT),  # a Unix socket: trusted, as gunicorn does
        ("", "127.0.0.1", CLIENT, "127.0.0.1"),  # set empty: no proxy is trusted
        ("127.0.0.1", "127.0.0.1", "", "127.0.0.1"),
    ],
)
def test_the_client_address(allow, peer, forwarded_for, client):
    assert TrustedProxies(parse_allow_list(allow)).client(peer, forwarded_for) == client


def test_the_setting_reads_like_gunicorns(monkeypatch):
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    assert Settings.from_env().forwarded_allow_ips == ("127.0.0.1", "::1")
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", " 10.0.0.0/8, 192.0.2.1,* ")
    assert Settings.from_env().forwarded_allow_ips == ("10.0.0.0/8", "192.0.2.1", "*")
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "")
    assert Settings.from_env().forwarded_allow_ips == ()
    for wrong in ("10.0.0.1/8", "proxy.example", "10.0.0.300"):
        monkeypatch.setenv("FORWARDED_ALLOW_IPS", f"127.0.0.1,{wrong}")
        with pytest.raises(RuntimeError, match="FORWARDED_ALLOW_IPS") as failure:
            Settings.from_env()
        assert repr(wrong) in str(failure.value)
