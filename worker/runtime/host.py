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
from typing import Any

from worker.runtime import protocol
from worker.runtime.engine import RunLimits, Runtime

IN, OUT = 0, 1
ADDRESS_SPACE_BACKSTOP = 4 * 1024 * 1024 * 1024  # QuickJS limits are per run; this is per process
HEAP_CHECK_EVERY = 16


class RuntimePool:
    """The runtime in use and a warm spare, so a recycle costs the next run nothing."""

    def __init__(self, stack_bytes: int, max_runs: int, heap_limit: int):
        self.stack_bytes = stack_bytes
        self.max_runs = max_runs
        self.heap_limit = heap_limit
        self.current = Runtime(stack_bytes)
        self.spare: Runtime | None = None
        self.recycled = 0

    def after_run(self, limit_hit: bool) -> None:
        rt = self.current
        heap_checked = rt.runs % HEAP_CHECK_EVERY == 0  # measuring the heap walks it: not after every run
        if limit_hit or rt.runs >= self.max_runs or (heap_checked and rt.heap_used() > self.heap_limit):
            self.current = self.spare or Runtime(self.stack_bytes)
            self.spare = None
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
    pool = RuntimePool(hello["stack_bytes"], hello["max_runs"], hello["heap_limit"])
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

        runtime = pool.current
        outcome = runtime.run(request, limits, host_calls)
        reply: dict[str, Any] = {"op": "done", **outcome.as_dict()}
        reply.update(runtime_id=runtime.id, runtime_runs=runtime.runs, runtimes_recycled=pool.recycled)
        protocol.send(OUT, reply)
        pool.after_run(outcome.limit_hit)
        pool.warm_spare()


if __name__ == "__main__":
    try:
        main()
    except protocol.ChannelClosed:
        pass
    except Exception as exc:
        print(f"sandbox process failed: {exc!r}", file=sys.stderr)
        sys.exit(70)
