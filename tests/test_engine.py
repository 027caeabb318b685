"""The QuickJS engine in-process: results, errors and their lines, every per-run cap, the
compile cache and host calls. No worker, no sandbox process: the fast tier's view of what a
script's author sees in an execution (docs/scripting.md)."""

import json

import pytest

from worker.runtime.engine import RunLimits, Runtime

LIMITS = RunLimits(cpu_seconds=5, memory_bytes=64 << 20, log_bytes=256 << 10, result_bytes=1 << 20)


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    return Runtime(1 << 20)


def run(runtime: Runtime, source: str, event: object = None, limits: RunLimits = LIMITS, host=None, **request):
    request = {
        "script_id": request.get("script_id", str(hash(source))),
        "version": request.get("version", 1),
        "source": source,
        "event_json": json.dumps(event or {}),
        "context": {"script": {"name": "test"}},
    }
    return runtime.run(request, limits, host or (lambda calls: []))


def test_main_gets_the_event_and_its_value_is_the_result(runtime):
    outcome = run(
        runtime, "async function main(event) { return { twice: event.n * 2, name: context.script.name }; }", {"n": 21}
    )
    assert outcome.status == "succeeded"
    assert json.loads(outcome.result_json) == {"twice": 42, "name": "test"}


def test_a_thrown_error_names_its_line_and_column_in_the_script(runtime):
    source = "async function main() {\n  const x = 1;\n  throw new TypeError('bad input: ' + x);\n}\n"
    outcome = run(runtime, source)
    assert (outcome.status, outcome.error_kind) == ("failed", "exception")
    assert outcome.error_message.startswith("TypeError: bad input: 1 (line 3, column")


def test_a_syntax_error_never_runs(runtime):
    outcome = run(runtime, "async function main() { return 1 +; }")
    assert (outcome.status, outcome.error_kind) == ("failed", "syntax")
    assert outcome.error_message


def test_cpu_time_limit_ends_a_busy_loop_with_its_figure(runtime):
    tight = RunLimits(cpu_seconds=0.2, memory_bytes=64 << 20, log_bytes=256 << 10, result_bytes=1 << 20)
    outcome = run(runtime, "async function main() { while (true) {} }", limits=tight)
    assert (outcome.error_kind, outcome.error_message) == ("timeout", "CPU time limit 0.2 s exceeded")


def test_memory_limit_counts_from_the_runs_start(runtime):
    small = RunLimits(cpu_seconds=5, memory_bytes=8 << 20, log_bytes=256 << 10, result_bytes=1 << 20)
    source = "async function main() { const a = []; while (true) a.push(new Array(1e5).fill(1)); }"
    outcome = Runtime(1 << 20).run(
        {"script_id": "m", "version": 1, "source": source, "event_json": "{}", "context": {}}, small, lambda c: []
    )
    assert (outcome.error_kind, outcome.error_message) == ("memory", "memory limit 8 MiB exceeded")


def test_deep_recursion_is_a_stack_overflow(runtime):
    outcome = run(runtime, "function f(n) { return f(n + 1) + 1; }\nasync function main() { return f(0); }")
    assert outcome.error_kind == "stack_overflow"
    assert outcome.error_message == "stack limit 1024 KiB exceeded (recursion too deep)"


def test_logs_are_kept_until_the_cap_then_one_line_says_how_many_were_dropped(runtime):
    capped = RunLimits(cpu_seconds=5, memory_bytes=64 << 20, log_bytes=1024, result_bytes=1 << 20)
    outcome = run(
        runtime, "async function main() { for (let i = 0; i < 100; i++) console.log('line ' + i); }", limits=capped
    )
    assert outcome.status == "succeeded"
    messages = [entry["message"] for entry in outcome.logs]
    assert messages[0] == "line 0"
    assert messages[-1].startswith("log limit 1 KiB reached: ") and messages[-1].endswith("later log lines dropped")
    assert outcome.logs[-1]["level"] == "warn"


def test_a_result_over_its_cap_fails_the_run_with_both_sizes(runtime):
    capped = RunLimits(cpu_seconds=5, memory_bytes=64 << 20, log_bytes=256 << 10, result_bytes=2048)
    outcome = run(runtime, "async function main() { return 'x'.repeat(10000); }", limits=capped)
    assert (outcome.status, outcome.error_kind) == ("failed", "result_too_large")
    assert outcome.error_message == "result limit 2 KiB exceeded (the result is 10 KiB)"


def test_a_version_compiles_once_and_a_new_version_replaces_it(runtime):
    first = run(runtime, "async function main() { return 1; }", script_id="cached", version=1)
    again = run(runtime, "async function main() { return 1; }", script_id="cached", version=1)
    changed = run(runtime, "async function main() { return 2; }", script_id="cached", version=2)
    assert (first.cache_hit, again.cache_hit, changed.cache_hit) == (False, True, False)
    assert json.loads(changed.result_json) == 2
    assert [key for key in runtime.cache if key[0] == "cached"] == [("cached", 2)]


def test_a_draft_neither_uses_nor_replaces_its_versions_compiled_code(runtime):
    saved, draft = "function main() { return 'saved'; }", "function main() { return 'draft'; }"
    first = run(runtime, saved, script_id="drafted", version=1)
    drafted = run(runtime, draft, script_id="drafted", version=None)
    again = run(runtime, saved, script_id="drafted", version=1)
    assert [json.loads(o.result_json) for o in (first, drafted, again)] == ["saved", "draft", "saved"]
    assert (first.cache_hit, drafted.cache_hit, again.cache_hit) == (False, False, True)
    assert [key for key in runtime.cache if key[0] == "drafted"] == [("drafted", 1)]
    assert json.loads(run(runtime, draft, script_id="fresh", version=None).result_json) == "draft"
    assert json.loads(run(runtime, saved, script_id="fresh", version=1).result_json) == "saved"


def test_host_calls_go_to_the_host_in_one_batch_and_their_answers_come_back(runtime):
    batches: list[list[dict]] = []

    def host(calls: list[dict]) -> list[dict]:
        batches.append(calls)
        return [{"id": call["id"], "ok": True, "value": json.dumps(call["arg"]["key"].upper())} for call in calls]

    source = "async function main() { return await Promise.all([storage.get('a'), storage.get('b')]); }"
    outcome = run(runtime, source, host=host)
    assert json.loads(outcome.result_json) == ["A", "B"]
    assert [[call["op"] for call in batch] for batch in batches] == [["storage.get", "storage.get"]]


def test_a_host_error_rejects_the_scripts_promise_with_its_message(runtime):
    def host(calls):
        return [{"id": call["id"], "ok": False, "error": "storage quota exceeded"} for call in calls]

    source = "async function main() { try { await storage.set('k', 1); } catch (e) { return e.message; } }"
    assert json.loads(run(runtime, source, host=host).result_json) == "storage quota exceeded"


def test_a_promise_that_never_settles_says_so(runtime):
    outcome = run(runtime, "async function main() { await new Promise(() => {}); }")
    assert outcome.error_message == "main's promise never settled (nothing left to wait for)"
