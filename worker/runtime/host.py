"""The sandbox process: runs scripts in QuickJS for one supervising worker.

    python -m worker.runtime.host

It holds no database or Redis connection: host calls (storage, hashing, fetch) go up to the
worker over the channel. Several runs may be in flight at once, each in a runtime of its own;
the process drives one at a time, between their host calls. The worker kills and replaces this
process when a run passes its wall-time limit, since nothing inside the process can stop JS
sitting in a long built-in.
"""

import ctypes
import os
import resource
import signal
import sys
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from worker.runtime import protocol
from worker.runtime.engine import Refused, RunLimits, RunSteps, Runtime

IN, OUT = 0, 1
ADDRESS_SPACE_BACKSTOP = 4 * 1024 * 1024 * 1024  # QuickJS limits are per run; this is per process


class RuntimePool:
    """Warm runtimes, kept per tenant, and a fresh spare.

    A run only ever executes in a runtime that has run nothing but its own tenant's code: no
    engine state (registries, heap, the random generator) can pass from one tenant to another,
    whatever a script does. Each run in flight has a runtime to itself (its job queue and run
    state are the run's), so a tenant with several runs in flight has as many; idle ones wait
    for that tenant's next runs. A tenant seen for the first time takes the spare, built while
    the sandbox was idle, so that only compiling its script is on its path. At most
    `max_tenants` runtimes are kept in all (each may hold up to `heap_limit`): past that, the
    least recently used tenant's oldest goes.
    """

    IDLE_PER_TENANT = 8  # warm runtimes kept for one tenant's next runs

    def __init__(self, stack_bytes: int, max_runs: int, heap_limit: int, max_tenants: int):
        self.stack_bytes = stack_bytes
        self.max_runs = max_runs
        self.heap_limit = heap_limit
        self.max_tenants = max_tenants
        self.idle: OrderedDict[str, list[Runtime]] = OrderedDict()
        self.spare: Runtime | None = Runtime(stack_bytes)
        self.recycled = 0
        self.kept = 0  # runtimes in `idle`

    def take(self, tenant: str) -> Runtime:
        kept = self.idle.get(tenant)
        if kept:
            self.kept -= 1
            runtime = kept.pop()
            if kept:
                self.idle.move_to_end(tenant)
            else:
                del self.idle[tenant]
            return runtime
        runtime = self.spare or Runtime(self.stack_bytes)
        self.spare = None
        return runtime

    def give_back(self, tenant: str, runtime: Runtime, limit_hit: bool) -> None:
        """Keep a runtime for its tenant's next run, unless it hit a limit, ran its quota of
        runs, or holds a heap past the cap (measured after every run, once its answer is sent)."""
        if limit_hit or runtime.runs >= self.max_runs or runtime.heap_used() > self.heap_limit:
            self.recycled += 1
            return
        kept = self.idle.setdefault(tenant, [])
        self.idle.move_to_end(tenant)
        if len(kept) < self.IDLE_PER_TENANT:
            kept.append(runtime)
            self.kept += 1
        while self.kept > self.max_tenants:
            oldest, runtimes = next(iter(self.idle.items()))  # the least recently used tenant's
            runtimes.pop(0)
            self.kept -= 1
            if not runtimes:
                del self.idle[oldest]

    def warm_spare(self) -> None:
        if self.spare is None:
            self.spare = Runtime(self.stack_bytes)


@dataclass
class _InFlight:
    tenant: str
    runtime: Runtime
    steps: RunSteps


class Sandbox:
    """The runs in flight in this process, each a generator of host-call batches. Every
    message from the worker (a run to start, answers for one) gets exactly one reply: the run's
    next host calls, or its outcome. So the worker always knows which run the process is busy
    with: the one whose message it sent longest ago without a reply."""

    def __init__(self, pool: RuntimePool):
        self.pool = pool
        self.runs: dict[str, _InFlight] = {}

    def handle(self, message: dict[str, Any]) -> None:
        run_id, op = message.pop("run"), message.pop("op")
        if op == "run":
            limits = RunLimits(**message.pop("limits"))
            tenant = str(message["tenant_id"])
            runtime = self.pool.take(tenant)
            flight = _InFlight(tenant, runtime, runtime.steps(message, limits))
            self.runs[run_id] = flight
            self._step(run_id, flight, None)
            return
        flight = self.runs.get(run_id)
        if flight is None:
            protocol.send(OUT, {"op": "done", "run": run_id, "status": "failed", "unknown": True})
            return
        if op == "cancel":  # its wall time passed while it waited: it ends where it stands
            del self.runs[run_id]
            flight.steps.close()
            self.pool.recycled += 1  # its runtime may hold its jobs still: never used again
            protocol.send(OUT, {"op": "done", "run": run_id, "status": "failed", "cancelled": True})
            return
        self._step(run_id, flight, message["answers"])

    def _step(self, run_id: str, flight: _InFlight, answers: list[dict] | None) -> None:
        try:
            calls = next(flight.steps) if answers is None else flight.steps.send(answers)
            try:
                asked = protocol.encode({"op": "host", "run": run_id, "calls": calls})
            except protocol.TooLarge:
                # Sent, it would end the process, and every run in flight in it, not just this one.
                limit = protocol.MAX_MESSAGE // 1024 // 1024
                calls = flight.steps.throw(Refused(f"the run's host calls are over the {limit} MiB channel limit"))
                asked = protocol.encode({"op": "host", "run": run_id, "calls": calls})
        except StopIteration as finished:
            del self.runs[run_id]
            outcome = finished.value
            reply: dict[str, Any] = {"op": "done", "run": run_id, **outcome.as_dict()}
            runtime = flight.runtime
            reply.update(runtime_id=runtime.id, runtime_runs=runtime.runs, runtimes_recycled=self.pool.recycled)
            protocol.send(OUT, reply)
            self.pool.give_back(flight.tenant, runtime, outcome.limit_hit)
            if not self.runs:
                self.pool.warm_spare()
            return
        protocol.write(OUT, asked)


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: a dead worker takes its sandbox along
    except OSError:
        pass
    if os.getppid() == 1:
        sys.exit(0)


def main() -> None:
    _die_with_parent()
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_BACKSTOP, ADDRESS_SPACE_BACKSTOP))
    hello = protocol.receive(IN)
    sandbox = Sandbox(RuntimePool(hello["stack_bytes"], hello["max_runs"], hello["heap_limit"], hello["tenants"]))
    protocol.send(OUT, {"op": "ready", "pid": os.getpid()})
    while True:
        try:
            message = protocol.receive(IN)
        except protocol.ChannelClosed:
            return
        sandbox.handle(message)


if __name__ == "__main__":
    try:
        main()
    except protocol.ChannelClosed:
        pass
    except Exception as exc:
        print(f"sandbox process failed: {exc!r}", file=sys.stderr)
        sys.exit(70)
