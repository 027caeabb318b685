"""What a run may take: the platform's defaults, a script's own limits, a run's effective ones.

A script's own `limits` may only lower the defaults (docs/scripting.md, "Limits"). Every
timeout derived from the wall-time limit is here too, so that the web process, the worker and
upkeep agree on when a run or an endpoint call is over.

No Flask here: the sandbox's supervisor (worker/runtime/sandbox.py) takes EffectiveLimits.
"""

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The defaults a script may lower, each with its label on the edit form.
LIMIT_LABELS = {"cpu_seconds": "CPU time (s)", "wall_seconds": "Wall time (s)", "memory_mb": "Memory (MiB)"}
LIMIT_KEYS = tuple(LIMIT_LABELS)
JOB_TIMEOUT_MARGIN_SECONDS = 60  # RQ's timeout on a job is a backstop: the worker enforces wall time
OVERDUE_MARGIN_SECONDS = 120
QUEUE_WAIT_SECONDS = 5  # an endpoint call no worker took by then is answered 503
ANSWER_MARGIN_SECONDS = 2  # a caller waits this beyond the wall-time limit once a worker has its call


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise RuntimeError(f"environment variable {name} must be an integer, got {raw!r}") from exc


@dataclass(frozen=True)
class DefaultLimits:
    """The platform's limits of every run (SCRIPT_* environment variables)."""

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
    def from_env(cls) -> "DefaultLimits":
        d = cls()
        return cls(
            cpu_seconds=env_int("SCRIPT_CPU_SECONDS", d.cpu_seconds),
            wall_seconds=env_int("SCRIPT_WALL_SECONDS", d.wall_seconds),
            memory_mb=env_int("SCRIPT_MEMORY_MB", d.memory_mb),
            stack_kb=env_int("SCRIPT_STACK_KB", d.stack_kb),
            log_kb=env_int("SCRIPT_LOG_KB", d.log_kb),
            result_kb=env_int("SCRIPT_RESULT_KB", d.result_kb),
            body_kb=env_int("SCRIPT_BODY_KB", d.body_kb),
            vm_max_runs=env_int("SCRIPT_VM_MAX_RUNS", d.vm_max_runs),
            vm_max_heap_mb=env_int("SCRIPT_VM_MAX_HEAP_MB", d.vm_max_heap_mb),
            vm_tenants=env_int("SCRIPT_VM_TENANTS", d.vm_tenants),
        )

    @property
    def job_timeout(self) -> int:
        """RQ's timeout on a run's job."""
        return self.wall_seconds + JOB_TIMEOUT_MARGIN_SECONDS

    @property
    def overdue_after(self) -> int:
        """Seconds after which no run can still be going: a run still `running` is stuck, its
        tenant's slot lapses, an endpoint call's job leaves Redis, and a call its worker has
        not recorded is the reaper's."""
        return self.wall_seconds + OVERDUE_MARGIN_SECONDS

    @property
    def call_hold(self) -> int:
        """How long an endpoint call may hold its tenant's slot: its caller's longest wait, and
        a second."""
        return QUEUE_WAIT_SECONDS + self.wall_seconds + ANSWER_MARGIN_SECONDS + 1


def own_limits(value: Any, defaults: DefaultLimits) -> tuple[dict[str, float] | None, dict[str, str]]:
    """A script's own `limits` as stored (None: the defaults), and what is wrong with them: a
    message per limit key (its subject left out: "must be a number"), or under "" for the
    object as a whole. Every bad limit is named, not only the first."""
    if value in (None, {}, ""):
        return None, {}
    if not isinstance(value, Mapping):
        return None, {"": 'must be an object like {"cpu_seconds": 2}'}
    unknown = [key for key in value if key not in LIMIT_KEYS]
    if unknown:
        return None, {"": f"unknown limit {unknown[0]!r} (allowed: {', '.join(LIMIT_KEYS)})"}
    out: dict[str, float] = {}
    problems: dict[str, str] = {}
    for key, raw in value.items():
        if raw in (None, ""):
            continue
        ceiling = getattr(defaults, key)
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            problems[key] = "must be a number"
        elif raw <= 0:
            problems[key] = "must be greater than 0"
        elif raw > ceiling:
            problems[key] = f"may not exceed the platform default of {ceiling}"
        else:
            out[key] = raw
    if problems:
        return None, problems
    return out or None, {}


def limits_message(problems: Mapping[str, str], names: Mapping[str, str] | None = None) -> str:
    """The problems of own_limits in one message, each limit named by `names` (the form's
    labels) or else by its key (the API's)."""
    names = names or {}
    return "; ".join(f"{names.get(key, key)} {problem}" if key else problem for key, problem in problems.items())


@dataclass(frozen=True)
class EffectiveLimits:
    """The limits one run is held to: the worker enforces wall time, the engine the rest."""

    cpu_seconds: float
    wall_seconds: float
    memory_bytes: int
    log_bytes: int
    result_bytes: int

    def for_engine(self) -> dict[str, Any]:
        return {
            "cpu_seconds": self.cpu_seconds,
            "memory_bytes": self.memory_bytes,
            "log_bytes": self.log_bytes,
            "result_bytes": self.result_bytes,
        }


def effective_limits(defaults: DefaultLimits, own: Mapping[str, float | None] | None) -> EffectiveLimits:
    """A run's limits: each of the script's own, no higher than the default."""
    own = own or {}

    def lowered(key: str) -> float:
        ceiling = getattr(defaults, key)
        return min(own.get(key) or ceiling, ceiling)

    return EffectiveLimits(
        cpu_seconds=lowered("cpu_seconds"),
        wall_seconds=lowered("wall_seconds"),
        memory_bytes=int(lowered("memory_mb") * 1024 * 1024),
        log_bytes=defaults.log_kb * 1024,
        result_bytes=defaults.result_kb * 1024,
    )
