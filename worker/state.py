"""Long-lived state of one worker process: the Flask app (for the database) and its sandbox
processes."""

import atexit
from dataclasses import dataclass

from flask import Flask

from webapp.app import create_app
from worker.busy import BusyCount
from worker.runtime.lanes import Lanes
from worker.runtime.sandbox import Sandbox


@dataclass
class WorkerState:
    app: Flask
    sandbox: Lanes
    name: str = "worker"
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
        settings = app.config["SETTINGS"]
        limits = settings.limits

        def one_sandbox() -> Sandbox:
            heap_limit = int(limits.vm_max_heap_mb * 1024 * 1024)
            return Sandbox(limits.stack_kb * 1024, limits.vm_max_runs, heap_limit, limits.vm_tenants)

        count = min(settings.worker_sandboxes, settings.worker_concurrency)
        sandbox = Lanes(count, settings.worker_concurrency, one_sandbox)
        _state = WorkerState(app=app, sandbox=sandbox)
        atexit.register(sandbox.close)
    return _state
