"""Fetch settings from the environment."""

from ipaddress import ip_network

import pytest

from webapp.config import FetchSettings, Settings

FETCH_VARIABLES = (
    "FETCH_ALLOWED_NETWORKS",
    "FETCH_BLOCKED_HOSTS",
    "SCRIPT_FETCH_MAX_REQUESTS",
    "SCRIPT_FETCH_MAX_RESPONSE_KB",
    "SCRIPT_FETCH_TIMEOUT_SECONDS",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in FETCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_defaults():
    fetch = Settings.from_env().fetch
    assert fetch == FetchSettings()
    assert (fetch.max_requests, fetch.max_response_kb, fetch.timeout_seconds) == (50, 5120, 10)
    assert (fetch.max_body_bytes, fetch.max_in_flight) == (1024 * 1024, 6)
    assert (fetch.allowed_networks, fetch.blocked_hosts) == ((), ())


def test_values_read(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FETCH_ALLOWED_NETWORKS", "10.20.0.0/16, 127.0.0.1 ,fd00::/8")
    monkeypatch.setenv("FETCH_BLOCKED_HOSTS", "*.corp.example.com,metadata.google.internal")
    monkeypatch.setenv("SCRIPT_FETCH_MAX_REQUESTS", "5")
    monkeypatch.setenv("SCRIPT_FETCH_MAX_RESPONSE_KB", "100")
    monkeypatch.setenv("SCRIPT_FETCH_TIMEOUT_SECONDS", "3")
    fetch = FetchSettings.from_env()
    assert fetch.allowed_networks == (ip_network("10.20.0.0/16"), ip_network("127.0.0.1/32"), ip_network("fd00::/8"))
    assert fetch.blocked_hosts == ("*.corp.example.com", "metadata.google.internal")
    assert (fetch.max_requests, fetch.max_response_kb, fetch.timeout_seconds) == (5, 100, 3)


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("FETCH_ALLOWED_NETWORKS", "10.0.0.0/8,intranet", "'intranet' is not an IP address or a CIDR network"),
        ("FETCH_ALLOWED_NETWORKS", "10.0.0.0/33", "'10.0.0.0/33' is not an IP address or a CIDR network"),
        ("FETCH_BLOCKED_HOSTS", "ok.com,*", "'*' is not a host name or a *.pattern"),
        ("SCRIPT_FETCH_MAX_REQUESTS", "many", "must be an integer, got 'many'"),
        ("SCRIPT_FETCH_MAX_RESPONSE_KB", "0", "must be greater than 0, got 0"),
        ("SCRIPT_FETCH_MAX_RESPONSE_KB", "8193", "must be at most 8192, got 8193"),
        ("SCRIPT_FETCH_TIMEOUT_SECONDS", "-1", "must be greater than 0, got -1"),
    ],
)
def test_bad_values_stop_the_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, problem: str
):
    monkeypatch.setenv(name, value)
    with pytest.raises(RuntimeError) as caught:
        Settings.from_env()
    assert str(caught.value).startswith(f"environment variable {name}")
    assert problem in str(caught.value)
