"""Several runs in flight in one sandbox process, each driven by a thread of the worker
(worker/runtime/sandbox.py): all wait on their host calls at once, each keeps its own result
and CPU time, and a run that passes a limit ends alone: the process killed for a wall-time
bomb takes none of its neighbours' outcomes with it (they run again in a fresh process).
"""

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from webapp.limits import EffectiveLimits
from worker.runtime.sandbox import Sandbox

pytestmark = pytest.mark.slow  # a sandbox process

LIMITS = EffectiveLimits(cpu_seconds=2, wall_seconds=10, memory_bytes=64 << 20, log_bytes=65536, result_bytes=65536)
WAITS = """async function main(event) {
  const got = await storage.get(event.key);
  console.log('run', event.key);
  return {got, key: event.key, tenant: context.tenant};
}"""
BOMB = (
    "function main() { const s = '[' + '1,'.repeat(2000000) + '1]'; let n = 0;"
    " for (let i = 0; i < 1000; i++) n += JSON.parse(s).length; return n; }"
)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    box = Sandbox(1 << 20, 500, 48 << 20)
    yield box
    box.close()


def _request(tenant: int, source: str, event: dict) -> dict[str, Any]:
    return {
        "tenant_id": tenant,
        "script_id": f"s{tenant}",
        "version": 1,
        "source": source,
        "event_json": json.dumps(event),
        "context": {"tenant": tenant},
    }


def _answering(value: Callable[[dict], Any], before: Callable[[], None] = lambda: None):
    def host(calls: list[dict]) -> list[dict]:
        before()
        return [{"id": c["id"], "ok": True, "value": json.dumps(value(c))} for c in calls]

    return host


def test_twenty_runs_wait_on_their_host_calls_at_once(sandbox: Sandbox):
    """Every run reaches its host call before any is answered: all 20 are in flight together."""
    together = threading.Barrier(20, timeout=20)
    host = _answering(lambda call: "value of " + call["arg"]["key"], together.wait)
    with ThreadPoolExecutor(20) as pool:
        outcomes = list(
            pool.map(
                lambda i: sandbox.run(_request(i % 3, WAITS, {"key": f"k{i}"}), LIMITS, host),
                range(20),
            )
        )
    for i, outcome in enumerate(outcomes):
        assert outcome["status"] == "succeeded", outcome
        assert json.loads(outcome["result_json"]) == {"got": f"value of k{i}", "key": f"k{i}", "tenant": i % 3}
        assert [line["message"] for line in outcome["logs"]] == [f"run k{i}"]  # no log crosses runs
    assert sandbox.restarts == 0


def test_a_wall_time_bomb_ends_alone_and_its_neighbours_succeed(sandbox: Sandbox):
    """Ten runs wait on the worker while a bomb sits in JSON.parse past its wall time: the
    process is killed for the bomb; the neighbours, whose runtimes went with it, run again."""
    bomb_done = threading.Event()
    calls = {"count": 0}
    lock = threading.Lock()

    def hold_until_the_bomb_is_done() -> None:
        with lock:
            calls["count"] += 1
        bomb_done.wait(30)

    host = _answering(lambda call: "fine", hold_until_the_bomb_is_done)
    with ThreadPoolExecutor(11) as pool:
        neighbours = [pool.submit(sandbox.run, _request(2, WAITS, {"key": f"n{i}"}), LIMITS, host) for i in range(10)]
        bomb_limits = EffectiveLimits(
            cpu_seconds=10, wall_seconds=2, memory_bytes=256 << 20, log_bytes=4096, result_bytes=4096
        )
        bomb = sandbox.run(_request(1, BOMB, {}), bomb_limits, host)
        bomb_done.set()
        outcomes = [n.result(timeout=60) for n in neighbours]
    assert (bomb["error_kind"], bomb["error_message"]) == ("timeout", "wall time limit 2 s exceeded")
    assert sandbox.restarts == 1
    assert [o["status"] for o in outcomes] == ["succeeded"] * 10, outcomes
    assert calls["count"] >= 10


def test_cpu_is_charged_to_the_run_that_spent_it(sandbox: Sandbox):
    release = threading.Event()
    host = _answering(lambda call: "fine", lambda: release.wait(30))
    with ThreadPoolExecutor(5) as pool:
        waiting = [pool.submit(sandbox.run, _request(2, WAITS, {"key": f"w{i}"}), LIMITS, host) for i in range(4)]
        spin_limits = EffectiveLimits(
            cpu_seconds=0.5, wall_seconds=10, memory_bytes=64 << 20, log_bytes=4096, result_bytes=4096
        )
        spun = sandbox.run(_request(1, "function main() { for (;;) {} }", {}), spin_limits, host)
        release.set()
        outcomes = [w.result(timeout=30) for w in waiting]
    assert (spun["error_kind"], spun["error_message"]) == ("timeout", "CPU time limit 0.5 s exceeded")
    assert all(o["status"] == "succeeded" and o["cpu_ms"] < 200 for o in outcomes), outcomes


def test_a_run_whose_wall_time_passes_on_the_worker_is_cancelled_alone(sandbox: Sandbox):
    slow_limits = EffectiveLimits(
        cpu_seconds=2, wall_seconds=0.5, memory_bytes=64 << 20, log_bytes=4096, result_bytes=4096
    )
    late = threading.Event()
    slow = sandbox.run(_request(1, WAITS, {"key": "slow"}), slow_limits, _answering(lambda c: 1, lambda: late.wait(1)))
    assert (slow["error_kind"], slow["error_message"]) == ("timeout", "wall time limit 0.5 s exceeded")
    pid = sandbox.pid
    after = sandbox.run(_request(1, WAITS, {"key": "after"}), LIMITS, _answering(lambda c: 2))
    assert after["status"] == "succeeded" and sandbox.pid == pid and sandbox.restarts == 0
