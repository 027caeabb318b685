"""Caps enforced outside the engine as well as in it: if a script ever got past the engine's
own log cap, memory limit or host-call count, the sandbox process and the worker still hold
(docs/reliability.md, "Tenant isolation")."""

from dataclasses import dataclass
from typing import Any

import pytest

from webapp.limits import EffectiveLimits
from worker.host_api import MAX_CALLS_PER_RUN, HostApi
from worker.runtime.engine import _with_drop_notice
from worker.runtime.sandbox import Sandbox


def test_logs_past_the_cap_are_dropped_outside_the_engine():
    entries = [{"time": "t", "level": "log", "message": "é" * 500} for _ in range(1000)]  # 1000 B each
    kept = _with_drop_notice(entries, 0, 256 * 1024)
    assert sum(len(e["message"].encode()) + 48 for e in kept[:-1]) <= 256 * 1024
    assert len(kept) - 1 == 256 * 1024 // 1048
    assert kept[-1]["message"] == f"log limit 256 KiB reached: {1000 - len(kept) + 1} later log lines dropped"


def test_host_calls_past_the_cap_are_refused_by_the_worker(app):
    host = HostApi(tenant_id=1)
    with app.app_context():
        calls = [{"id": i, "op": "utils.hash", "arg": {"text": "x"}} for i in range(MAX_CALLS_PER_RUN + 2)]
        answers = host(calls)
    assert all(a["ok"] for a in answers[:MAX_CALLS_PER_RUN])
    assert answers[-1] == {
        "id": MAX_CALLS_PER_RUN + 1,
        "ok": False,
        "error": "host call limit 10000 reached in this run",
    }


@dataclass(frozen=True)
class _EngineLimitLifted(EffectiveLimits):
    """The worker's limits, with the engine told a far higher memory limit: as if a script had
    lifted the engine's own."""

    def for_engine(self) -> dict[str, Any]:
        return {**super().for_engine(), "memory_bytes": 1024 * 1024 * 1024}


@pytest.fixture
def sandbox():
    box = Sandbox(1 << 20, 500, 48 << 20)
    yield box
    box.close()


HOLD_MEMORY = """
function main() {
  const held = [];
  for (let i = 0; i < 48; i++) held.push(new Uint8Array(4 * 1024 * 1024).fill(i + 1));  // 192 MiB, touched
  const until = Date.now() + 5000;
  while (Date.now() < until) {}
  return held.length;
}
"""


def test_memory_past_the_limit_ends_the_run_outside_the_engine(sandbox):
    limits = _EngineLimitLifted(
        cpu_seconds=10, wall_seconds=10, memory_bytes=32 << 20, log_bytes=1024, result_bytes=1024
    )
    request = {"tenant_id": 1, "script_id": "s", "version": 1, "source": HOLD_MEMORY, "event_json": "{}", "context": {}}
    outcome = sandbox.run(request, limits, lambda calls: [])
    assert (outcome["status"], outcome["error_kind"]) == ("failed", "memory")
    assert outcome["error_message"] == "memory limit 32 MiB exceeded"
    assert outcome["wall_ms"] < 4000  # ended by the backstop, not by the 5 s loop's end
    again = sandbox.run({**request, "source": "function main() { return 1 }", "version": 2}, limits, lambda c: [])
    assert again["status"] == "succeeded"
