"""The worker's side of the sandbox: supervises one sandbox process and enforces wall time.

quickjs-ng cannot interrupt JS that sits inside a long built-in (JSON.parse of a huge string),
and a Python thread cannot interrupt C code, so the wall-time limit (and a CPU backstop read
from /proc) are enforced here by killing the sandbox process and starting a fresh one.
"""

import logging
import os
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from webapp.config import PROJECT_ROOT
from webapp.limits import EffectiveLimits
from worker.runtime import protocol

log = logging.getLogger(__name__)
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
_POLL_SECONDS = 0.2
CPU_GRACE_SECONDS = 1.0  # the engine's own interrupt normally ends a run first
MEMORY_GRACE_BYTES = 64 * 1024 * 1024  # likewise the engine's memory limit, for the RSS backstop


HostHandler = Callable[[list[dict]], list[dict]]


class Sandbox:
    """One sandbox process, replaced whenever it has to be killed or dies."""

    def __init__(self, stack_bytes: int, max_runs: int, heap_limit: int, tenants: int = 64):
        self.hello = {
            "op": "hello",
            "stack_bytes": stack_bytes,
            "max_runs": max_runs,
            "heap_limit": heap_limit,
            "tenants": tenants,
        }
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.busy = False

    # -- process lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(PROJECT_ROOT),
            "LANG": "C.UTF-8",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker.runtime.host"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=str(PROJECT_ROOT),
            env=env,
        )
        protocol.send(self.proc.stdin.fileno(), self.hello)
        ready = self._receive(deadline=time.monotonic() + 30)
        if ready is None or ready.get("op") != "ready":
            self.kill()
            raise RuntimeError("the sandbox process did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    pipe.close()
            self.proc = None

    def close(self) -> None:
        self.kill()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    # -- one run --------------------------------------------------------------------------
    def run(self, request: dict[str, Any], limits: EffectiveLimits, host: HostHandler) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            self.kill()
            self.start()
        assert self.proc is not None
        started = time.monotonic()
        deadline = started + limits.wall_seconds
        cpu = _ProcessWatch(self, limits.memory_bytes + MEMORY_GRACE_BYTES)
        self.busy = True
        try:
            run_id = uuid.uuid4().hex
            start = {"op": "run", "run": run_id, **request, "limits": limits.for_engine()}
            protocol.send(self.proc.stdin.fileno(), start)
            while True:
                message = self._receive(deadline, cpu, limits.cpu_seconds + CPU_GRACE_SECONDS)
                if message is None:
                    return self._killed(limits, started, cpu)
                if message["op"] == "host":
                    if cpu.used() > limits.cpu_seconds + CPU_GRACE_SECONDS or cpu.grown_past_memory:
                        return self._killed(limits, started, cpu)
                    answers = {"op": "answers", "run": run_id, "answers": host(message["calls"])}
                    protocol.send(self.proc.stdin.fileno(), answers)
                    continue
                message["wall_ms"] = round((time.monotonic() - started) * 1000, 3)
                return message
        except (protocol.ChannelClosed, BrokenPipeError, OSError) as exc:
            code = self.proc.poll() if self.proc else None
            log.warning("sandbox process died during a run (exit %s): %s", code, exc)
            self.kill()
            return _failure("exception", f"the sandbox process died during the run (exit code {code})")
        except BaseException:
            self.kill()  # e.g. RQ's job-timeout alarm: never leave a run going in the sandbox
            raise
        finally:
            self.busy = False

    def _receive(
        self, deadline: float, cpu: "_ProcessWatch | None" = None, cpu_limit: float | None = None
    ) -> dict[str, Any] | None:
        """The next message, or None once the deadline or a backstop (CPU, memory) is passed."""
        assert self.proc is not None
        fd = self.proc.stdout.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], min(left, _POLL_SECONDS))
            if readable:
                return protocol.receive(fd)
            if cpu is not None and cpu_limit is not None and (cpu.used() > cpu_limit or cpu.grown_past_memory):
                return None

    def _cpu_and_rss(self) -> tuple[float, int]:
        """CPU seconds and resident bytes of the sandbox process, from /proc."""
        try:
            with open(f"/proc/{self.pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS, int(fields[21]) * _PAGE_BYTES
        except (OSError, IndexError, ValueError):
            return 0.0, 0

    def _killed(self, limits: EffectiveLimits, started: float, watch: "_ProcessWatch") -> dict[str, Any]:
        cpu = watch.used()
        wall = time.monotonic() - started
        self.kill()
        self.restarts += 1
        if watch.grown_past_memory:
            outcome = _failure("memory", f"memory limit {limits.memory_bytes / 1024 / 1024:g} MiB exceeded")
            outcome["wall_ms"] = round(wall * 1000, 3)
            outcome["cpu_ms"] = round(cpu * 1000, 3)
            return outcome
        if wall < limits.wall_seconds and cpu > limits.cpu_seconds:
            message = f"CPU time limit {limits.cpu_seconds:g} s exceeded (used {cpu:.1f} s)"
        else:
            message = f"wall time limit {limits.wall_seconds:g} s exceeded"
        outcome = _failure("timeout", message)
        outcome["wall_ms"] = round(wall * 1000, 3)
        outcome["cpu_ms"] = round(cpu * 1000, 3)
        return outcome


class _ProcessWatch:
    """The sandbox's CPU time and resident memory since a run began: backstops outside the
    engine, which enforces both limits itself. Read from /proc as the run starts (~20 us), then
    only once it outlasts a poll or calls the host (most runs take milliseconds and do
    neither)."""

    def __init__(self, sandbox: Sandbox, memory_bytes: int):
        self.sandbox = sandbox
        self.memory_bytes = memory_bytes
        self.cpu_start, self.rss_start = sandbox._cpu_and_rss()
        self.grown_past_memory = False

    def used(self) -> float:
        cpu, rss = self.sandbox._cpu_and_rss()
        self.grown_past_memory = rss - self.rss_start > self.memory_bytes
        return max(cpu - self.cpu_start, 0.0)


def _failure(kind: str, message: str) -> dict[str, Any]:
    return {
        "op": "done",
        "status": "failed",
        "result_json": None,
        "error_kind": kind,
        "error_message": message,
        "logs": [],
        "cache_hit": False,
        "cpu_ms": 0.0,
        "limit_hit": True,
        "runtime_id": None,
        "runtime_runs": 0,
        "runtimes_recycled": 0,
    }
