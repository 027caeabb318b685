"""A worker's sandbox processes (worker/runtime/lanes.py): a tenant's runs share the process
where it already has runs in flight, while there is room; another tenant's run goes to the
least busy process, a new one while fewer than the worker may have. Real sandbox processes;
the runs wait on a host that answers when the test lets it."""

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.services import eventually
from webapp.limits import EffectiveLimits
from worker.runtime.lanes import Lanes
from worker.runtime.sandbox import Sandbox

pytestmark = pytest.mark.slow  # sandbox processes
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


SPIN = "function main() { for (;;) {} }"
MEMORY_BOMB = "function main() { const a = []; for (;;) a.push(new Array(100000).fill(1.5)); }"
PARSE_BOMB = (
    "function main() { const s = '[' + '1,'.repeat(2000000) + '1]'; let n = 0;"
    " for (let i = 0; i < 1000; i++) n += JSON.parse(s).length; return n; }"
)


def test_bombs_beside_twenty_waiting_runs_fail_alone_with_their_own_errors():
    """20 runs of four tenants wait on their host calls, spread over the worker's processes;
    then a CPU-bound run, a memory bomb and a JSON.parse bomb (past its wall time inside the
    built-in: only killing its process ends it) of three other tenants. Each bomb fails with
    its own error; every waiting run succeeds (run again from the top if its process was
    killed for a bomb) and is charged none of the bombs' CPU."""
    lanes = Lanes(3, 24, lambda: Sandbox(1 << 20, 500, 48 << 20))
    gate = Gate()
    spin_limits = EffectiveLimits(
        cpu_seconds=1, wall_seconds=20, memory_bytes=32 << 20, log_bytes=4096, result_bytes=4096
    )
    parse_limits = EffectiveLimits(
        cpu_seconds=10, wall_seconds=2, memory_bytes=256 << 20, log_bytes=4096, result_bytes=4096
    )
    bombs = ((SPIN, spin_limits), (MEMORY_BOMB, spin_limits), (PARSE_BOMB, parse_limits))
    try:
        with ThreadPoolExecutor(24) as pool:
            waiting = _in_flight(lanes, pool, gate, [(10 + i % 4, f"w{i}") for i in range(20)])
            started = [
                pool.submit(lanes.run, _request_of(20 + i, source), limits, gate)
                for i, (source, limits) in enumerate(bombs)
            ]
            ended = [b.result(timeout=30) for b in started]
            gate.open()
            outcomes = [w.result(timeout=60) for w in waiting]
    finally:
        lanes.close()
    assert [(b["error_kind"], b["error_message"]) for b in ended] == [
        ("timeout", "CPU time limit 1 s exceeded"),
        ("memory", "memory limit 32 MiB exceeded"),
        ("timeout", "wall time limit 2 s exceeded"),
    ]
    assert [json.loads(o["result_json"]) for o in outcomes] == [f"w{i}" for i in range(20)]
    assert all(o["cpu_ms"] < 200 for o in outcomes), [o["cpu_ms"] for o in outcomes]
    assert lanes.restarts >= 1  # the JSON.parse bomb's process was killed


def _request_of(tenant: int, source: str) -> dict:
    return {**_request(tenant, "k"), "source": source}


BOMB_LIMITS = EffectiveLimits(cpu_seconds=10, wall_seconds=2, memory_bytes=256 << 20, log_bytes=4096, result_bytes=4096)
# Waits on its host most of the time (as a run awaiting fetches does), for about 8 s.
BUSY_WAITING = (
    "async function main(event) { const end = Date.now() + 8000; let v;"
    " while (Date.now() < end) v = await storage.get(event.key); return v; }"
)


class SlowHost:
    """Answers each storage call after 20 ms; counts the calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, calls: list[dict]) -> list[dict]:
        self.calls += 1
        time.sleep(0.02)
        return [{"id": c["id"], "ok": True, "value": json.dumps(c["arg"]["key"])} for c in calls]


def test_two_bombs_of_one_tenant_do_not_fail_another_tenants_run_in_their_lane():
    """A tenant with nothing in flight goes to the least busy process, which may be a bomb
    thrower's. Its run is started again each time that process is killed for a bomb (as
    long as its own wall time lasts), and succeeds."""
    lanes = Lanes(2, 8, lambda: Sandbox(1 << 20, 500, 48 << 20))  # 2 processes, 4 runs of a tenant each
    try:
        with ThreadPoolExecutor(8) as pool:
            # acme (1) in lane 0; globex (3) takes lane 1 with two runs; initech (2) then goes to
            # the least busy lane: acme's.
            runs = []
            for tenant, key in [(1, "a"), (3, "g1"), (3, "g2"), (2, "victim")]:
                host = SlowHost()
                runs.append(
                    pool.submit(
                        lanes.run,
                        {**_request_of(tenant, BUSY_WAITING), "event_json": json.dumps({"key": key})},
                        LIMITS,
                        host,
                    )
                )
                eventually(lambda host=host: host.calls > 0, 10, f"run {key} started")
            assert len(lanes.pids) == 2
            # acme's two bombs, one after the other, in its own lane (where initech's run is).
            ended = [lanes.run(_request_of(1, PARSE_BOMB), BOMB_LIMITS, SlowHost()) for _ in range(2)]
            outcomes = [r.result(timeout=30) for r in runs]
    finally:
        lanes.close()
    assert [b["error_kind"] for b in ended] == ["timeout", "timeout"], [b["error_message"] for b in ended]
    victim = outcomes[3]
    assert victim["status"] == "succeeded", (victim["error_message"], lanes.restarts)
