"""The client's address behind a trusted proxy, through a real proxy hop: the Procfile's `web`
(gunicorn) behind a reverse proxy on 127.0.0.1 (trusted by FORWARDED_ALLOW_IPS's default), with
clients that each connect from their own loopback address."""

import pytest

from tests.conftest import PASSWORD, bearer, csrf_from
from tests.proxy import client_at, reverse_proxy
from tests.test_endpoints import _endpoint

ANN, BOB, MALLORY = "127.0.0.2", "127.0.0.3", "127.0.0.4"


@pytest.fixture
def web(start_web, make_user) -> str:
    make_user("ed@acme.io")
    return start_web().url


def _login(client, base: str, email: str, password: str, forged: str | None = None) -> int:
    form = client.get(f"{base}/login", timeout=30)
    assert form.status_code == 200, form.text
    headers = {"X-Forwarded-For": forged} if forged else {}
    data = {"email": email, "password": password, "csrf_token": csrf_from(form.text)}
    return client.post(f"{base}/login", data=data, headers=headers, allow_redirects=False, timeout=30).status_code


def test_ten_wrong_guesses_through_the_proxy_lock_that_client_and_no_other(web):
    with reverse_proxy(web) as proxy:
        ann, bob = client_at(ANN), client_at(BOB)
        # Ten accounts, so only the address counts; each guess claims another address in front.
        for i in range(10):
            assert _login(ann, proxy, f"guess{i}@acme.io", "bad", forged=f"198.51.100.{i}") == 401
        assert _login(ann, proxy, "ed@acme.io", PASSWORD, forged="198.51.100.99") == 429
        assert _login(bob, proxy, "ed@acme.io", PASSWORD) == 302


def test_a_direct_peer_forging_x_forwarded_for_is_keyed_on_its_own_address(web):
    mallory = client_at(MALLORY)  # reaches gunicorn without the proxy: not a trusted peer
    for i in range(10):
        assert _login(mallory, web, f"guess{i}@acme.io", "bad", forged=f"{BOB}, 198.51.100.{i}") == 401
    assert _login(mallory, web, "ed@acme.io", PASSWORD, forged="198.51.100.99") == 429
    with reverse_proxy(web) as proxy:
        assert _login(client_at(BOB), proxy, "ed@acme.io", PASSWORD) == 302  # named, not locked


def test_an_endpoint_sees_the_forwarded_client_address(web, client, make_token, start_worker):
    start_worker()
    token = bearer(make_token("ed@acme.io"))
    _endpoint(client, token, "GET", "/ip", "function main(req) { return { body: req.ip } }")
    with reverse_proxy(web) as proxy:
        through_proxy = client_at(ANN).get(f"{proxy}/api/scripts/ip", headers=token, timeout=30)
        assert through_proxy.status_code == 200, through_proxy.text
        assert through_proxy.text == ANN
    forged = client_at(MALLORY).get(f"{web}/api/scripts/ip", headers={**token, "X-Forwarded-For": ANN}, timeout=30)
    assert forged.text == MALLORY
