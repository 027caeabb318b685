"""The sandbox process with several runs in flight (worker/runtime/host.py), spoken to over
its channel as a worker does: each run in a runtime of its own, answers in any order, a run
cancelled while it waits, CPU charged to the run that spent it."""

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from webapp.config import PROJECT_ROOT
from worker.runtime import protocol
from worker.runtime.host import RuntimePool

pytestmark = pytest.mark.slow  # a sandbox process
LIMITS = {"cpu_seconds": 1.0, "memory_bytes": 64 << 20, "log_bytes": 65536, "result_bytes": 65536}


class Channel:
    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    def send(self, message: dict[str, Any]) -> dict[str, Any]:
        """Every message gets exactly one reply, for the run it names."""
        protocol.send(self.proc.stdin.fileno(), message)
        reply = protocol.receive(self.proc.stdout.fileno())
        assert reply["run"] == message["run"]
        return reply

    def start(self, tenant: int, source: str, event: Any = None, limits: dict | None = None) -> tuple[str, dict]:
        run_id = uuid.uuid4().hex
        request = {
            "op": "run",
            "run": run_id,
            "tenant_id": tenant,
            "script_id": f"s{tenant}",
            "version": 1,
            "source": source,
            "event_json": json.dumps(event or {}),
            "context": {"tenant": {"id": tenant}},
            "limits": limits or LIMITS,
        }
        return run_id, self.send(request)

    def answer(self, run_id: str, calls: list[dict], value: Any) -> dict:
        answers = [{"id": c["id"], "ok": True, "value": json.dumps(value)} for c in calls]
        return self.send({"op": "answers", "run": run_id, "answers": answers})


@pytest.fixture
def channel() -> Iterator[Channel]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker.runtime.host"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=PROJECT_ROOT
    )
    protocol.send(
        proc.stdin.fileno(),
        {"op": "hello", "stack_bytes": 1 << 20, "max_runs": 500, "heap_limit": 48 << 20, "tenants": 8},
    )
    assert protocol.receive(proc.stdout.fileno())["op"] == "ready"
    yield Channel(proc)
    proc.kill()
    proc.wait()


READS = """async function main(event) {
  const got = await storage.get('k');
  return {got, mine: event.mine, tenant: context.tenant.id};
}"""


def test_runs_of_two_tenants_in_flight_answered_in_any_order(channel: Channel):
    a, asked_a = channel.start(1, READS, {"mine": "a"})
    b, asked_b = channel.start(2, READS, {"mine": "b"})
    assert asked_a["op"] == asked_b["op"] == "host"
    done_b = channel.answer(b, asked_b["calls"], "for b")
    done_a = channel.answer(a, asked_a["calls"], "for a")
    assert json.loads(done_a["result_json"]) == {"got": "for a", "mine": "a", "tenant": 1}
    assert json.loads(done_b["result_json"]) == {"got": "for b", "mine": "b", "tenant": 2}
    assert done_a["runtime_id"] != done_b["runtime_id"]


def test_runs_of_one_tenant_in_flight_each_have_a_runtime_later_reused(channel: Channel):
    first, asked_first = channel.start(1, READS, {"mine": 1})
    second, asked_second = channel.start(1, READS, {"mine": 2})
    one = channel.answer(first, asked_first["calls"], 1)
    two = channel.answer(second, asked_second["calls"], 2)
    assert [json.loads(r["result_json"])["got"] for r in (one, two)] == [1, 2]
    assert one["runtime_id"] != two["runtime_id"]
    third, asked = channel.start(1, READS, {"mine": 3})
    again = channel.answer(third, asked["calls"], 3)
    assert again["runtime_id"] in {one["runtime_id"], two["runtime_id"]}  # warm, and the tenant's own


def test_a_run_cancelled_while_it_waits_ends_and_its_runtime_is_not_reused(channel: Channel):
    waiting, asked = channel.start(1, READS, {"mine": "w"})
    assert asked["op"] == "host"
    cancelled = channel.send({"op": "cancel", "run": waiting})
    assert (cancelled["op"], cancelled["status"], cancelled.get("cancelled")) == ("done", "failed", True)
    later, asked_later = channel.start(1, READS, {"mine": "l"})
    done = channel.answer(later, asked_later["calls"], "ok")
    assert json.loads(done["result_json"])["got"] == "ok"
    assert done["runtimes_recycled"] >= 1


def test_cpu_is_charged_to_the_run_that_spent_it(channel: Channel):
    waiting, asked = channel.start(2, READS, {"mine": "w"})
    _, spun = channel.start(1, "function main() { for (;;) {} }", limits={**LIMITS, "cpu_seconds": 0.3})
    assert (spun["op"], spun["error_kind"]) == ("done", "timeout")
    assert spun["cpu_ms"] >= 300
    done = channel.answer(waiting, asked["calls"], "fine")
    assert done["status"] == "succeeded" and done["cpu_ms"] < 100


def test_the_warm_runtimes_of_a_process_are_at_most_its_tenants_setting():
    """SCRIPT_VM_TENANTS bounds the warm runtimes of a process in all, however many runs each
    tenant had in flight: each may hold up to SCRIPT_VM_MAX_HEAP_MB of compiled code, and the
    process's address space is capped (4 GiB); 64 tenants with 8 runtimes each would be 24 GiB."""
    pool = RuntimePool(1 << 20, 500, 48 << 20, max_tenants=4)
    for tenant in ("a", "b", "c", "d"):
        taken = [pool.take(tenant) for _ in range(8)]
        for runtime in taken:
            pool.give_back(tenant, runtime, limit_hit=False)
    assert sum(len(kept) for kept in pool.idle.values()) == 4
    assert pool.idle["d"]  # the tenant seen last is kept warm
