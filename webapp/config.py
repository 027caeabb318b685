"""Configuration, read from environment variables only (README.md, "Configuration")."""

import base64
import os
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from webapp.client_address import DEFAULT_FORWARDED_ALLOW_IPS, parse_allow_list
from webapp.limits import DefaultLimits, env_int

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INSTANCE_DIR = PROJECT_ROOT / "instance"


def _allow_list(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return parse_allow_list(raw)  # set but empty: no proxy is trusted, as gunicorn reads it
    except ValueError as exc:
        raise RuntimeError(f"environment variable {name}: {exc}") from exc


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
    retention_count: int = 1000  # executions kept per script
    retention_days: int = 30
    audit_retention_days: int = 365  # AUDIT_RETENTION_DAYS: audit entries older are pruned
    # Proxies whose X-Forwarded-For names the client (webapp/client_address.py).
    forwarded_allow_ips: tuple[str, ...] = DEFAULT_FORWARDED_ALLOW_IPS

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
            retention_count=env_int("EXECUTION_RETENTION_COUNT", 1000),
            retention_days=env_int("EXECUTION_RETENTION_DAYS", 30),
            audit_retention_days=env_int("AUDIT_RETENTION_DAYS", 365),
            forwarded_allow_ips=_allow_list("FORWARDED_ALLOW_IPS", DEFAULT_FORWARDED_ALLOW_IPS),
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
