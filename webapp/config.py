"""Configuration, read from environment variables only (README.md, "Configuration")."""

import base64
import os
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import TypeVar

from webapp.client_address import DEFAULT_FORWARDED_ALLOW_IPS, parse_allow_list
from webapp.limits import DefaultLimits, env_int
from worker.fetch.hosts import parse_host_patterns

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INSTANCE_DIR = PROJECT_ROOT / "instance"
T = TypeVar("T")


@dataclass(frozen=True)
class TenantLimits:
    """What one tenant may take of the shared platform (docs/architecture.md, Fairness)."""

    max_runs: int = 0  # runs in flight across all workers; 0: half the live run slots, at least 1
    endpoint_rate: int = 6000  # endpoint calls per minute; 0: no limit
    max_scripts: int = 500
    storage_mb: int = 256  # storage values plus kept execution logs and results

    @classmethod
    def from_env(cls) -> "TenantLimits":
        d = cls()
        return cls(
            max_runs=env_int("TENANT_MAX_RUNS", d.max_runs),
            endpoint_rate=env_int("TENANT_ENDPOINT_RATE", d.endpoint_rate),
            max_scripts=env_int("TENANT_MAX_SCRIPTS", d.max_scripts),
            storage_mb=env_int("TENANT_STORAGE_MB", d.storage_mb),
        )


MAX_WORKER_CONCURRENCY = 256
MAX_WORKER_SANDBOXES = 32

# An answer crosses the sandbox's channel as JSON: escaped (every byte that is not UTF-8 becomes
# `\ufffd`), it may grow sixfold, and a message may not pass 64 MiB (worker/runtime/protocol.py).
MAX_RESPONSE_KB = 8192


@dataclass(frozen=True)
class FetchSettings:
    """Outbound HTTP of scripts (`fetch`, docs/fetch-guard.md)."""

    allowed_networks: tuple[IPv4Network | IPv6Network, ...] = ()  # exempt from the address guard
    blocked_hosts: tuple[str, ...] = ()  # host patterns no script may fetch
    max_requests: int = 50  # per run
    max_response_kb: int = 5120
    timeout_seconds: int = 10  # per request, never past the run's wall time
    max_body_bytes: int = 1024 * 1024  # request body
    max_in_flight: int = 6  # per run

    @classmethod
    def from_env(cls) -> "FetchSettings":
        d = cls()
        return cls(
            allowed_networks=_env_parsed("FETCH_ALLOWED_NETWORKS", _networks, ()),
            blocked_hosts=_env_parsed("FETCH_BLOCKED_HOSTS", parse_host_patterns, ()),
            max_requests=_positive_int("SCRIPT_FETCH_MAX_REQUESTS", d.max_requests),
            max_response_kb=_positive_int("SCRIPT_FETCH_MAX_RESPONSE_KB", d.max_response_kb, MAX_RESPONSE_KB),
            timeout_seconds=_positive_int("SCRIPT_FETCH_TIMEOUT_SECONDS", d.timeout_seconds),
        )


def _networks(raw: str) -> tuple[IPv4Network | IPv6Network, ...]:
    """Comma-separated CIDR networks or addresses; host bits are dropped (`10.1.2.3/8` is 10/8)."""
    out = []
    for entry in (part.strip() for part in raw.split(",")):
        if entry:
            try:
                out.append(ip_network(entry, strict=False))
            except ValueError as exc:
                raise ValueError(f"{entry!r} is not an IP address or a CIDR network") from exc
    return tuple(out)


def _env_parsed(name: str, parse: Callable[[str], T], default: T) -> T:
    """A variable read by `parse` (set but empty too: FORWARDED_ALLOW_IPS="" trusts no proxy,
    as gunicorn reads it); a ValueError stops the process, naming the variable."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return parse(raw)
    except ValueError as exc:
        raise RuntimeError(f"environment variable {name}: {exc}") from exc


def _positive_int(name: str, default: int, most: int | None = None) -> int:
    value = env_int(name, default)
    if value <= 0:
        raise RuntimeError(f"environment variable {name} must be greater than 0, got {value}")
    if most is not None and value > most:
        raise RuntimeError(f"environment variable {name} must be at most {most}, got {value}")
    return value


def default_database_url() -> str:
    return f"sqlite:///{INSTANCE_DIR / 'script-runner.db'}"


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    secret_key: str
    metrics_token: str | None
    # SECRETS_KEY: comma-separated Fernet keys, the first encrypts (webapp/secret_store/keys.py).
    secrets_key: str = field(default="", repr=False)
    # Where it came from: "env" (SECRETS_KEY), "instance" (instance/secrets_key, SECRETS_KEY
    # unset) or "generated" (that file, made by this process): the start check says which.
    secrets_key_origin: str = "env"
    limits: DefaultLimits = field(default_factory=DefaultLimits)
    tenants: TenantLimits = field(default_factory=TenantLimits)
    fetch: FetchSettings = field(default_factory=FetchSettings)
    retention_count: int = 1000  # executions kept per script
    retention_days: int = 30
    audit_retention_days: int = 365  # AUDIT_RETENTION_DAYS: audit entries older are pruned
    # Proxies whose X-Forwarded-For names the client (webapp/client_address.py).
    forwarded_allow_ips: tuple[str, ...] = DEFAULT_FORWARDED_ALLOW_IPS
    # WORKER_CONCURRENCY: runs of any kind one worker has in flight, spread over its sandbox
    # processes (docs/architecture.md, "Several sandbox processes per worker"). 32: two workers
    # keep 64 connections' calls to a 100 ms upstream in flight (docs/benchmarks.md).
    worker_concurrency: int = 32
    # WORKER_SANDBOXES: sandbox processes one worker may start, each computing one run's slice
    # at a time (worker/runtime/lanes.py); started as needed, never more than WORKER_CONCURRENCY.
    worker_sandboxes: int = 4

    @classmethod
    def from_env(cls) -> "Settings":
        secrets_key, secrets_key_origin = _secrets_key()
        return cls(
            database_url=os.environ.get("DATABASE_URL") or default_database_url(),
            redis_url=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
            secret_key=os.environ.get("SECRET_KEY") or _instance_file("secret_key", lambda: secrets.token_hex(32)),
            secrets_key=secrets_key,
            secrets_key_origin=secrets_key_origin,
            metrics_token=os.environ.get("METRICS_TOKEN") or None,
            limits=DefaultLimits.from_env(),
            tenants=TenantLimits.from_env(),
            fetch=FetchSettings.from_env(),
            retention_count=env_int("EXECUTION_RETENTION_COUNT", 1000),
            retention_days=env_int("EXECUTION_RETENTION_DAYS", 30),
            audit_retention_days=env_int("AUDIT_RETENTION_DAYS", 365),
            forwarded_allow_ips=_env_parsed("FORWARDED_ALLOW_IPS", parse_allow_list, DEFAULT_FORWARDED_ALLOW_IPS),
            worker_concurrency=_positive_int("WORKER_CONCURRENCY", 32, MAX_WORKER_CONCURRENCY),
            worker_sandboxes=_positive_int("WORKER_SANDBOXES", 4, MAX_WORKER_SANDBOXES),
        )


def _instance_file(name: str, make: Callable[[], str]) -> str:
    """Without SECRET_KEY (or SECRETS_KEY), keep a random key in instance/ so sessions (and
    stored secrets) survive restarts and every local process (web, workers, CLI) agrees on it."""
    path = INSTANCE_DIR / name
    if not path.exists():
        INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
        # Written whole under another name, then linked into place: a process starting at the
        # same moment reads either no file or the whole key, never an empty one.
        fd, tmp = tempfile.mkstemp(dir=INSTANCE_DIR, prefix=f".{name}.")
        with os.fdopen(fd, "w") as fh:
            fh.write(make())
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process won the race
            pass
        finally:
            os.unlink(tmp)
    return path.read_text().strip()


def _secrets_key() -> tuple[str, str]:
    """SECRETS_KEY and its origin (Settings.secrets_key_origin)."""
    if raw := os.environ.get("SECRETS_KEY"):
        return raw, "env"
    existed = (INSTANCE_DIR / "secrets_key").exists()
    return _instance_file("secrets_key", _new_fernet_key), "instance" if existed else "generated"


def _new_fernet_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()  # what Fernet.generate_key makes
