"""Several runs in flight in one sandbox process, each driven by a thread of the worker
(worker/runtime/sandbox.py): all wait on their host calls at once, each keeps its own result
and CPU time, and a run that passes a limit ends alone: the process killed for a wall-time
bomb takes none of its neighbours' outcomes with it (they run again in a fresh process).
"""

import dataclasses
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from ipaddress import ip_network
from typing import Any

import pytest

from tests.fetch_upstream import upstream
from tests.services import eventually
from webapp.config import FetchSettings
from webapp.limits import EffectiveLimits
from worker.host_api import HostApi
from worker.runtime.lanes import Lanes
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


@pytest.fixture
def lanes() -> Iterator[Lanes]:
    """A worker's sandbox processes: 4 lanes for 16 runs in flight."""
    box = Lanes(4, 16, lambda: Sandbox(1 << 20, 500, 48 << 20))
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


LOOPS = """async function main(event) {
  let got;
  for (let i = 0; i < event.times; i++) got = await storage.get(event.key);
  return {got};
}"""
# 12 M 'é' take 12 MiB in the engine, but 72 MiB once escaped for the channel (\u00e9).
FLOOD = "async function main() { await storage.set('k', '\\u00e9'.repeat(12000000)); return 1; }"


def _counting(seconds: float) -> tuple[Callable, Callable[[], int]]:
    """A host answering every call after `seconds`, and how many batches it answered."""
    seen = {"count": 0}
    lock = threading.Lock()

    def before() -> None:
        with lock:
            seen["count"] += 1
        time.sleep(seconds)

    return _answering(lambda call: "fine", before), lambda: seen["count"]


def test_host_calls_too_large_for_the_channel_fail_their_run_alone(sandbox: Sandbox):
    """A run whose host calls would not fit the channel fails on its own: the process, and
    the other tenant's runs in flight in it, go on."""
    host, answered = _counting(0.05)
    with ThreadPoolExecutor(3) as pool:
        events = [{"key": f"n{i}", "times": 20} for i in range(3)]
        neighbours = [pool.submit(sandbox.run, _request(2, LOOPS, e), LIMITS, host) for e in events]
        eventually(lambda: answered() >= 3, 10, "the neighbours in flight")
        pid = sandbox.pid
        # Room enough in the engine that the channel, not memory, is the limit it meets.
        flood = sandbox.run(_request(1, FLOOD, {}), dataclasses.replace(LIMITS, memory_bytes=512 << 20), host)
        outcomes = [n.result(timeout=60) for n in neighbours]
    assert [(o["status"], o["error_message"]) for o in outcomes] == [("succeeded", None)] * 3
    assert flood["error_kind"] == "exception" and "64 MiB" in flood["error_message"], flood
    assert sandbox.pid == pid and sandbox.restarts == 0


def test_answers_too_large_for_the_channel_fail_their_run_alone(sandbox: Sandbox):
    """The worker's side of the same: 128 storage values of 256 KiB ('é' x 131000, within
    MAX_VALUE_BYTES and the 16 MiB a run may read) are 96 MiB once escaped for the channel.
    Sent, they would end the process under every run in flight."""
    host, answered = _counting(0.05)
    value = json.dumps(json.dumps("\u00e9" * 131000))  # a stored value: JSON text of 262002 bytes
    big = {"id": 0, "ok": True, "value": json.loads(value)}
    reads = "async function main() { await Promise.all(Array.from({length: 128}, () => storage.get('k'))); }"

    def read_all(calls: list[dict]) -> list[dict]:
        return [{**big, "id": c["id"]} for c in calls]

    with ThreadPoolExecutor(3) as pool:
        events = [{"key": f"n{i}", "times": 20} for i in range(3)]
        neighbours = [pool.submit(sandbox.run, _request(2, LOOPS, e), LIMITS, host) for e in events]
        eventually(lambda: answered() >= 3, 10, "the neighbours in flight")
        pid = sandbox.pid
        reader = sandbox.run(_request(1, reads, {}), LIMITS, read_all)
        outcomes = [n.result(timeout=60) for n in neighbours]
    assert [(o["status"], o["error_message"]) for o in outcomes] == [("succeeded", None)] * 3
    assert reader["error_kind"] == "exception" and "64 MiB" in reader["error_message"], reader
    assert sandbox.pid == pid and sandbox.restarts == 0


def test_the_run_a_process_dies_under_fails_alone_and_is_not_run_again(sandbox: Sandbox):
    """The process ends on its own (a crash; here the kernel's SIGKILL) while busy with one
    run: that run fails, and only the others run again. Run again, a run that crashes the
    process would crash it a second time, and every neighbour with it."""
    host, answered = _counting(0.05)
    spin_limits = EffectiveLimits(
        cpu_seconds=5, wall_seconds=20, memory_bytes=64 << 20, log_bytes=4096, result_bytes=4096
    )
    with ThreadPoolExecutor(4) as pool:
        events = [{"key": f"n{i}", "times": 20} for i in range(3)]
        neighbours = [pool.submit(sandbox.run, _request(2, LOOPS, e), LIMITS, host) for e in events]
        eventually(lambda: answered() >= 3, 10, "the neighbours in flight")
        before = sandbox._cpu_and_rss()[0]
        spinner = pool.submit(sandbox.run, _request(1, "function main() { for (;;) {} }", {}), spin_limits, host)
        eventually(lambda: sandbox._cpu_and_rss()[0] - before >= 0.5, 10, "the spinner busy in the process")
        os.kill(sandbox.pid, signal.SIGKILL)
        spun = spinner.result(timeout=30)
        outcomes = [n.result(timeout=30) for n in neighbours]
    assert (spun["error_kind"], spun["error_message"]) == ("exception", "the sandbox process died during the run")
    assert [o["status"] for o in outcomes] == ["succeeded"] * 3, outcomes


def test_a_run_started_again_for_another_runs_sake_has_its_budgets_afresh(app, sandbox: Sandbox):
    """A run may make 3 fetches here. Its first start makes one, then a bomb's process kill
    starts it again, where it makes its 3: none may fail for what its first start spent (nor
    be answered with what its first start asked)."""
    settings = FetchSettings(allowed_networks=(ip_network("127.0.0.1/32"),), max_requests=3, timeout_seconds=5)
    source = """async function main(e) {
      const out = [];
      for (let i = 0; i < 3; i++) out.push((await fetch(e.url + '/slow?ms=300&n=' + i)).status);
      return out;
    }"""
    bomb_limits = EffectiveLimits(
        cpu_seconds=10, wall_seconds=2, memory_bytes=256 << 20, log_bytes=4096, result_bytes=4096
    )

    def victim(url: str) -> dict[str, Any]:
        with app.app_context():
            host = HostApi(2, settings, time.monotonic() + LIMITS.wall_seconds)
            try:
                return sandbox.run(_request(2, source, {"url": url}), LIMITS, host)
            finally:
                host.close()

    with upstream() as server, ThreadPoolExecutor(1) as pool:
        ran = pool.submit(victim, server.origin)
        eventually(lambda: server.seen, 10, "the victim's first fetch")
        bomb = sandbox.run(_request(1, BOMB, {}), bomb_limits, _answering(lambda call: 1))
        outcome = ran.result(timeout=30)
    assert bomb["error_kind"] == "timeout" and sandbox.restarts == 1
    assert (outcome["status"], outcome["error_message"]) == ("succeeded", None), outcome
    assert json.loads(outcome["result_json"]) == [200, 200, 200]


def test_two_wall_time_bombs_of_one_tenant_fail_no_run_of_another(lanes: Lanes):
    """Two bombs one after the other, each ended by killing its process. In one process the
    neighbour would be started three times over; lanes keep the bombs' tenant out of the
    neighbour's process, which is never killed."""
    host, answered = _counting(0.05)
    bomb_limits = EffectiveLimits(
        cpu_seconds=10, wall_seconds=2, memory_bytes=256 << 20, log_bytes=4096, result_bytes=4096
    )
    with ThreadPoolExecutor(1) as pool:
        neighbour = pool.submit(lanes.run, _request(2, LOOPS, {"key": "n", "times": 60}), LIMITS, host)
        eventually(lambda: answered() >= 1, 10, "the neighbour in flight")
        bombs = [lanes.run(_request(1, BOMB, {}), bomb_limits, host) for _ in range(2)]
        outcome = neighbour.result(timeout=60)
    assert [b["error_kind"] for b in bombs] == ["timeout", "timeout"] and lanes.restarts == 2
    assert (outcome["status"], outcome["error_message"]) == ("succeeded", None)


def test_cpu_bound_runs_of_one_tenant_do_not_time_out_a_run_of_another(lanes: Lanes):
    """Four spinning runs (1 s of CPU each) of one tenant, then a run of another that needs a
    millisecond of CPU and has 3 s of wall time. In one process it would wait behind all four
    and fail with its own timeout; the lanes give it a process of its own."""
    spin_limits = EffectiveLimits(
        cpu_seconds=1, wall_seconds=30, memory_bytes=64 << 20, log_bytes=4096, result_bytes=4096
    )
    quick_limits = EffectiveLimits(
        cpu_seconds=1, wall_seconds=3, memory_bytes=64 << 20, log_bytes=4096, result_bytes=4096
    )
    host = _answering(lambda call: "fine")
    spin = _request(1, "function main() { for (;;) {} }", {})
    with ThreadPoolExecutor(4) as pool:
        spinners = [pool.submit(lanes.run, spin, spin_limits, host) for _ in range(4)]
        eventually(lambda: _cpu_seconds(lanes.pids) >= 0.3, 10, "the spinners busy")
        quick = lanes.run(_request(2, WAITS, {"key": "q"}), quick_limits, host)
        assert [s.result(timeout=30)["error_kind"] for s in spinners] == ["timeout"] * 4
    assert (quick["status"], quick["error_message"]) == ("succeeded", None)


def _cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def test_a_run_ended_with_its_own_tenants_process_is_not_started_again_with_fresh_budgets(sandbox: Sandbox):
    """A tenant's run waits on the worker while another run of the same tenant is killed for
    its wall time: started again it would get its CPU, call and fetch budgets afresh, so a
    tenant could lift its own limits by killing its own process. It fails; another tenant's
    run in flight beside it is started again and succeeds."""
    bomb_done = threading.Event()
    host = _answering(lambda call: "fine", lambda: bomb_done.wait(30))
    with ThreadPoolExecutor(2) as pool:
        own = pool.submit(sandbox.run, _request(1, WAITS, {"key": "own"}), LIMITS, host)
        other = pool.submit(sandbox.run, _request(2, WAITS, {"key": "other"}), LIMITS, host)
        eventually(lambda: len(sandbox._replies) == 2, 10, "both runs in flight")
        bomb_limits = EffectiveLimits(
            cpu_seconds=10, wall_seconds=2, memory_bytes=256 << 20, log_bytes=4096, result_bytes=4096
        )
        bomb = sandbox.run(_request(1, BOMB, {}), bomb_limits, host)
        bomb_done.set()
        own_outcome, other_outcome = own.result(timeout=30), other.result(timeout=30)
    assert bomb["error_kind"] == "timeout" and sandbox.restarts == 1
    assert own_outcome["error_message"] == "the sandbox process was ended for another run of this tenant"
    assert (other_outcome["status"], other_outcome["error_message"]) == ("succeeded", None)


def test_a_run_given_up_while_it_waited_is_ended_when_it_computes_on_at_the_head(sandbox: Sandbox):
    """A spinning run's wall time (0.5 s) passes while it waits behind another spinner: it is
    reported timed out, but its message is in the process already, and once at the head it
    would spin to its 5 s CPU limit with no thread watching it, holding up the run of another
    tenant queued behind it. The process is ended for it within a second instead."""
    host = _answering(lambda call: "fine")
    spin = "function main() { for (;;) {} }"
    first_limits = EffectiveLimits(
        cpu_seconds=1, wall_seconds=30, memory_bytes=64 << 20, log_bytes=4096, result_bytes=4096
    )
    given_up_limits = EffectiveLimits(
        cpu_seconds=5, wall_seconds=0.5, memory_bytes=64 << 20, log_bytes=4096, result_bytes=4096
    )
    quick_limits = EffectiveLimits(
        cpu_seconds=1, wall_seconds=4, memory_bytes=64 << 20, log_bytes=4096, result_bytes=4096
    )
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(sandbox.run, _request(1, spin, {}), first_limits, host)
        eventually(lambda: sandbox._cpu_and_rss()[0] >= 0.1, 10, "the first spinner busy")
        given_up = pool.submit(sandbox.run, _request(1, spin, {}), given_up_limits, host)
        eventually(lambda: len(sandbox._sent) == 2, 10, "the second spinner queued")
        quick = pool.submit(sandbox.run, _request(2, WAITS, {"key": "q"}), quick_limits, host)
        outcomes = [f.result(timeout=30) for f in (first, given_up, quick)]
    assert outcomes[0]["error_message"] == "CPU time limit 1 s exceeded"
    assert outcomes[1]["error_message"] == "wall time limit 0.5 s exceeded"
    assert (outcomes[2]["status"], outcomes[2]["error_message"]) == ("succeeded", None)
    assert sandbox.restarts == 1
