"""Long-lived state of one worker process: the Flask app (for the database) and its sandbox."""

import atexit
from dataclasses import dataclass

from flask import Flask

from webapp.app import create_app
from worker.busy import BusyCount
from worker.runtime.sandbox import Sandbox


@dataclass
class WorkerState:
    app: Flask
    sandbox: Sandbox
    name: str = "worker"
    recycles_seen: int = 0  # the sandbox's recycle count at the last run (for the metric)
    busy: BusyCount | None = None  # set by the worker process (absent when jobs run in tests' helpers)

    def set_busy(self, busy: bool) -> None:
        """A run starts (True) or ends (False); several may be in flight."""
        if self.busy is not None:
            self.busy.add(1 if busy else -1)


_state: WorkerState | None = None


def get_state() -> WorkerState:
    global _state
    if _state is None:
        app = create_app()
        limits = app.config["SETTINGS"].limits
        sandbox = Sandbox(
            limits.stack_kb * 1024, limits.vm_max_runs, int(limits.vm_max_heap_mb * 1024 * 1024), limits.vm_tenants
        )
        _state = WorkerState(app=app, sandbox=sandbox)
        atexit.register(sandbox.close)
    return _state
