"""A worker's sandbox processes (worker/runtime/lanes.py): a tenant's runs share the process
where it already has runs in flight, while there is room; another tenant's run goes to the
least busy process, a new one while fewer than the worker may have. Real sandbox processes;
the runs wait on a host that answers when the test lets it."""

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.services import eventually
from webapp.limits import EffectiveLimits
from worker.runtime.lanes import Lanes
from worker.runtime.sandbox import Sandbox

LIMITS = EffectiveLimits(cpu_seconds=2, wall_seconds=20, memory_bytes=64 << 20, log_bytes=4096, result_bytes=4096)
WAITS = "async function main(event) { return await storage.get(event.key); }"


@pytest.fixture
def lanes() -> Iterator[Lanes]:
    box = Lanes(3, 6, lambda: Sandbox(1 << 20, 500, 48 << 20))  # 3 processes, 2 runs of a tenant each
    yield box
    box.close()


class Gate:
    """A host holding every run's storage call until `open()`; counts the calls waiting."""

    def __init__(self) -> None:
        self.waiting = 0
        self._opened = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, calls: list[dict]) -> list[dict]:
        with self._lock:
            self.waiting += 1
        self._opened.wait(20)
        return [{"id": c["id"], "ok": True, "value": json.dumps(c["arg"]["key"])} for c in calls]

    def open(self) -> None:
        self._opened.set()


def _request(tenant: int, key: str) -> dict:
    return {
        "tenant_id": tenant,
        "script_id": f"s{tenant}",
        "version": 1,
        "source": WAITS,
        "event_json": json.dumps({"key": key}),
        "context": {},
    }


def _in_flight(lanes: Lanes, pool: ThreadPoolExecutor, gate: Gate, runs: list[tuple[int, str]]) -> list:
    """Start the runs one by one, each waiting at the gate before the next starts."""
    futures = []
    for tenant, key in runs:
        before = gate.waiting
        futures.append(pool.submit(lanes.run, _request(tenant, key), LIMITS, gate))
        eventually(lambda before=before: gate.waiting > before, 10, f"run {key} waiting")
    return futures


def test_a_tenants_runs_share_a_process_and_another_tenant_gets_its_own(lanes: Lanes):
    gate = Gate()
    with ThreadPoolExecutor(8) as pool:
        acme = _in_flight(lanes, pool, gate, [(1, "a1"), (1, "a2")])
        assert len(lanes.pids) == 1  # acme's second run joined its first
        globex = _in_flight(lanes, pool, gate, [(2, "g1")])
        assert len(lanes.pids) == 2  # globex is not put behind acme's runs
        gate.open()
        outcomes = [f.result(timeout=20) for f in acme + globex]
    assert [json.loads(o["result_json"]) for o in outcomes] == ["a1", "a2", "g1"]


def test_a_tenant_spills_to_other_processes_when_its_own_is_full_and_never_past_the_count(lanes: Lanes):
    gate = Gate()
    with ThreadPoolExecutor(8) as pool:
        runs = _in_flight(lanes, pool, gate, [(1, f"a{i}") for i in range(7)])
        assert len(lanes.pids) == 3  # 2 per process, then the least busy: never a 4th process
        gate.open()
        outcomes = [f.result(timeout=20) for f in runs]
    assert [json.loads(o["result_json"]) for o in outcomes] == [f"a{i}" for i in range(7)]
    assert lanes.restarts == 0
