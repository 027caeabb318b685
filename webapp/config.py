"""Configuration, read from environment variables only (SPEC §2)."""

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from webapp.client_address import DEFAULT_FORWARDED_ALLOW_IPS, parse_allow_list

PROJECT_ROOT = Path(__file__).resolve().parent.parent
INSTANCE_DIR = PROJECT_ROOT / "instance"


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise RuntimeError(f"environment variable {name} must be an integer, got {raw!r}") from exc


def _allow_list(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return parse_allow_list(raw)  # set but empty: no proxy is trusted, as gunicorn reads it
    except ValueError as exc:
        raise RuntimeError(f"environment variable {name}: {exc}") from exc


@dataclass(frozen=True)
class ScriptLimits:
    """Default sandbox limits; a script's own `limits` may only lower them."""

    cpu_seconds: int = 5
    wall_seconds: int = 30
    memory_mb: int = 64
    stack_kb: int = 1024
    log_kb: int = 256
    result_kb: int = 1024
    body_kb: int = 1024
    vm_max_runs: int = 500
    vm_max_heap_mb: int = 48  # a runtime holding more than this after a run is replaced
    vm_tenants: int = 64  # warm runtimes per sandbox process, one per tenant

    @classmethod
    def from_env(cls) -> "ScriptLimits":
        d = cls()
        return cls(
            cpu_seconds=_int("SCRIPT_CPU_SECONDS", d.cpu_seconds),
            wall_seconds=_int("SCRIPT_WALL_SECONDS", d.wall_seconds),
            memory_mb=_int("SCRIPT_MEMORY_MB", d.memory_mb),
            stack_kb=_int("SCRIPT_STACK_KB", d.stack_kb),
            log_kb=_int("SCRIPT_LOG_KB", d.log_kb),
            result_kb=_int("SCRIPT_RESULT_KB", d.result_kb),
            body_kb=_int("SCRIPT_BODY_KB", d.body_kb),
            vm_max_runs=_int("SCRIPT_VM_MAX_RUNS", d.vm_max_runs),
            vm_max_heap_mb=_int("SCRIPT_VM_MAX_HEAP_MB", d.vm_max_heap_mb),
            vm_tenants=_int("SCRIPT_VM_TENANTS", d.vm_tenants),
        )


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
            max_runs=_int("TENANT_MAX_RUNS", d.max_runs),
            endpoint_rate=_int("TENANT_ENDPOINT_RATE", d.endpoint_rate),
            max_scripts=_int("TENANT_MAX_SCRIPTS", d.max_scripts),
            storage_mb=_int("TENANT_STORAGE_MB", d.storage_mb),
        )


def default_database_url() -> str:
    return f"sqlite:///{INSTANCE_DIR / 'script-runner.db'}"


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str
    secret_key: str
    metrics_token: str | None
    limits: ScriptLimits = field(default_factory=ScriptLimits)
    tenants: TenantLimits = field(default_factory=TenantLimits)
    retention_count: int = 1000  # executions kept per script
    retention_days: int = 30
    # Proxies whose X-Forwarded-For names the client (webapp/client_address.py).
    forwarded_allow_ips: tuple[str, ...] = DEFAULT_FORWARDED_ALLOW_IPS

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            database_url=os.environ.get("DATABASE_URL") or default_database_url(),
            redis_url=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
            secret_key=os.environ.get("SECRET_KEY") or _instance_secret_key(),
            metrics_token=os.environ.get("METRICS_TOKEN") or None,
            limits=ScriptLimits.from_env(),
            tenants=TenantLimits.from_env(),
            retention_count=_int("EXECUTION_RETENTION_COUNT", 1000),
            retention_days=_int("EXECUTION_RETENTION_DAYS", 30),
            forwarded_allow_ips=_allow_list("FORWARDED_ALLOW_IPS", DEFAULT_FORWARDED_ALLOW_IPS),
        )


def _instance_secret_key() -> str:
    """Without SECRET_KEY, keep a random key in instance/ so sessions survive restarts
    and every local process (web workers, CLI) agrees on it."""
    path = INSTANCE_DIR / "secret_key"
    if not path.exists():
        INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process won the race
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
    return path.read_text().strip()
