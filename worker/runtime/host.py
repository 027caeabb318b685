"""The sandbox process: runs scripts in QuickJS for one supervising worker.

    python -m worker.runtime.host

It holds no database or Redis connection: host calls (storage, hashing) go up to the worker
over the channel. The worker kills and replaces this process when a run passes its wall-time
limit, since nothing inside the process can stop JS sitting in a long built-in.
"""

import ctypes
import os
import resource
import signal
import sys
from collections import OrderedDict
from typing import Any

from worker.runtime import protocol
from worker.runtime.engine import RunLimits, Runtime

IN, OUT = 0, 1
ADDRESS_SPACE_BACKSTOP = 4 * 1024 * 1024 * 1024  # QuickJS limits are per run; this is per process


class RuntimePool:
    """Warm runtimes, one per tenant, and a fresh spare.

    A run only ever executes in a runtime that has run nothing but its own tenant's code: no
    engine state (registries, heap, the random generator) can pass from one tenant to another,
    whatever a script does. A tenant seen for the first time takes the spare, built while the
    sandbox was idle, so that only compiling its script is on its path.
    """

    def __init__(self, stack_bytes: int, max_runs: int, heap_limit: int, max_tenants: int):
        self.stack_bytes = stack_bytes
        self.max_runs = max_runs
        self.heap_limit = heap_limit
        self.max_tenants = max_tenants
        self.by_tenant: OrderedDict[str, Runtime] = OrderedDict()
        self.spare: Runtime | None = Runtime(stack_bytes)
        self.recycled = 0

    def runtime_for(self, tenant: str) -> Runtime:
        runtime = self.by_tenant.get(tenant)
        if runtime is not None:
            self.by_tenant.move_to_end(tenant)
            return runtime
        runtime = self.spare or Runtime(self.stack_bytes)
        self.spare = None
        self.by_tenant[tenant] = runtime
        while len(self.by_tenant) > self.max_tenants:
            self.by_tenant.popitem(last=False)  # the least recently used
        return runtime

    def after_run(self, tenant: str, limit_hit: bool) -> None:
        """Drop a runtime that hit a limit, ran its quota of runs, or holds a heap past the cap
        (measured after every run, once its answer is sent)."""
        runtime = self.by_tenant.get(tenant)
        if runtime is None:
            return
        if limit_hit or runtime.runs >= self.max_runs or runtime.heap_used() > self.heap_limit:
            del self.by_tenant[tenant]
            self.recycled += 1

    def warm_spare(self) -> None:
        if self.spare is None:
            self.spare = Runtime(self.stack_bytes)


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
    pool = RuntimePool(hello["stack_bytes"], hello["max_runs"], hello["heap_limit"], hello["tenants"])
    protocol.send(OUT, {"op": "ready", "pid": os.getpid()})
    while True:
        try:
            request = protocol.receive(IN)
        except protocol.ChannelClosed:
            return
        limits = RunLimits(**request.pop("limits"))

        def host_calls(calls: list[dict]) -> list[dict]:
            protocol.send(OUT, {"op": "host", "calls": calls})
            return protocol.receive(IN)["answers"]

        tenant = str(request["tenant_id"])
        runtime = pool.runtime_for(tenant)
        outcome = runtime.run(request, limits, host_calls)
        reply: dict[str, Any] = {"op": "done", **outcome.as_dict()}
        reply.update(runtime_id=runtime.id, runtime_runs=runtime.runs, runtimes_recycled=pool.recycled)
        protocol.send(OUT, reply)
        pool.after_run(tenant, outcome.limit_hit)
        pool.warm_spare()


if __name__ == "__main__":
    try:
        main()
    except protocol.ChannelClosed:
        pass
    except Exception as exc:
        print(f"sandbox process failed: {exc!r}", file=sys.stderr)
        sys.exit(70)
