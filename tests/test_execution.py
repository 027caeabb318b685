"""Running scripts end to end: API → RQ → a real worker process → QuickJS sandbox → database."""

import pytest


def test_manual_run_with_params_async_main_and_logs(editor, start_worker, run_script):
    start_worker()
    source = """
async function main(event) {
  console.log("hello", event.name);
  console.warn({ n: event.n });
  await null;
  return { greeting: `hi ${event.name}`, tenant: context.tenant.name, trigger: context.execution.trigger };
}
"""
    execution = run_script(editor, source, params={"name": "Ann", "n": 2})
    assert execution["status"] == "succeeded", execution
    assert execution["result"] == {"greeting": "hi Ann", "tenant": "acme", "trigger": "api"}
    assert [(e["level"], e["message"]) for e in execution["logs"]] == [("log", "hello Ann"), ("warn", '{"n":2}')]
    assert execution["params"] == {"name": "Ann", "n": 2}
    assert execution["trigger"] == "api" and execution["script_version"] == 1
    assert execution["worker"] and execution["duration_ms"] > 0
    assert execution["started_at"] >= execution["queued_at"] and execution["finished_at"] >= execution["started_at"]


NEXT = "function main(event) { return { ok: [1, 2, 3].map(x => x * 2), json: JSON.stringify({a: 1}) } }"
EXPECTED_NEXT = {"ok": [2, 4, 6], "json": '{"a":1}'}

LIMIT_CASES = {
    "array-growth": (
        "function main() { const a = []; while (true) a.push({ x: a.length }); }",
        {},
        "memory",
        "memory limit 64 MiB exceeded",
    ),
    "string-doubling": (
        "function main() { let s = 'x'; while (true) s += s; }",
        {},
        "memory",
        "memory limit 64 MiB exceeded",
    ),
    "array-buffer": (
        "function main() { return new ArrayBuffer(200 * 1024 * 1024).byteLength; }",
        {},
        "memory",
        "memory limit 64 MiB exceeded",
    ),
    "own-memory-limit": (
        "function main() { return new ArrayBuffer(20 * 1024 * 1024).byteLength; }",
        {"memory_mb": 16},
        "memory",
        "memory limit 16 MiB exceeded",
    ),
    "busy-loop": ("function main() { while (true) {} }", {"cpu_seconds": 1}, "timeout", "CPU time limit 1 s exceeded"),
    "catastrophic-regex": (
        "function main() { return /^(a+)+$/.test('a'.repeat(32) + 'b'); }",
        {"cpu_seconds": 1},
        "timeout",
        "CPU time limit 1 s exceeded",
    ),
    "long-builtin": (
        "function main() { const s = '[' + '1,'.repeat(2000000) + '1]'; let n = 0;"
        " for (let i = 0; i < 1000; i++) n += JSON.parse(s).length; return n; }",
        {"wall_seconds": 2},
        "timeout",
        "wall time limit 2 s exceeded",
    ),
    "deep-recursion": (
        "function main() { function f(n) { return f(n + 1) + 1; } return f(0); }",
        {},
        "stack_overflow",
        "stack limit 1024 KiB exceeded (recursion too deep)",
    ),
    "thrown-string": (
        "function main() { throw 'plain string'; }",
        {},
        "exception",
        "Uncaught non-Error value: plain string",
    ),
    "thrown-error": (
        "function main() {\n  const o = null;\n  return o.field;\n}",
        {},
        "exception",
        "TypeError: cannot read property 'field' of null (line 3, column 10)",
    ),
    "result-too-large": (
        "function main() { return 'x'.repeat(2 * 1024 * 1024); }",
        {},
        "result_too_large",
        "result limit 1024 KiB exceeded (the result is 2048 KiB)",
    ),
}


@pytest.mark.parametrize("case", list(LIMIT_CASES))
def test_each_limit_ends_only_its_run(case, editor, start_worker, run_script):
    source, limits, kind, message = LIMIT_CASES[case]
    worker = start_worker()
    failed = run_script(editor, source, limits=limits or None, wait=40)
    assert failed["status"] == "failed", failed
    assert failed["error_kind"] == kind
    assert failed["error_message"] == message
    if "wall_seconds" in limits:  # ends within the limit + 1 s of the clock
        assert failed["duration_ms"] < (limits["wall_seconds"] + 1) * 1000
    if "cpu_seconds" in limits:  # ... of CPU time: on a busy machine the clock runs further
        assert failed["runtime"]["cpu_ms"] < (limits["cpu_seconds"] + 1) * 1000
    after = run_script(editor, NEXT)
    assert after["status"] == "succeeded" and after["result"] == EXPECTED_NEXT
    assert after["worker"] == failed["worker"] == worker.name  # the same worker went on


def test_syntax_error_of_a_stored_version_reports_line_and_column(app, editor, start_worker, run_script, client):
    start_worker()
    body = {"name": "old", "type": "manual", "source": "function main() { return 1 }"}
    script_id = client.post("/api/v1/scripts", json=body, headers=editor).get_json()["id"]
    from webapp.extensions import db
    from webapp.models import ScriptVersion

    with app.app_context():  # a version saved before validation existed, say
        db.session.scalar(db.select(ScriptVersion)).source = "function main() {\n  return 1 +;\n}"
        db.session.commit()
    failed = run_script.again(editor, script_id)
    assert failed["error_kind"] == "syntax"
    assert failed["error_message"] == "SyntaxError: unexpected token in expression: ';' (line 2, column 13)"


def test_compile_cache_hits_the_same_version_and_misses_a_new_one(editor, start_worker, run_script, client):
    start_worker()
    first = run_script(editor, "let calls = 0; function main() { calls++; return calls }")
    second = run_script.again(editor, first["script_id"])
    assert first["runtime"]["cache_hit"] is False and second["runtime"]["cache_hit"] is True
    assert first["result"] == second["result"] == 1  # fresh top-level state on every run
    assert first["runtime"]["runtime_id"] == second["runtime"]["runtime_id"]
    client.patch(
        f"/api/v1/scripts/{first['script_id']}", json={"source": "function main() { return 'v2' }"}, headers=editor
    )
    third = run_script.again(editor, first["script_id"])
    assert third["script_version"] == 2 and third["result"] == "v2"
    assert third["runtime"]["cache_hit"] is False


def test_runtime_is_recycled_after_max_runs(editor, start_worker, run_script):
    start_worker(SCRIPT_VM_MAX_RUNS="3")
    runs = [run_script(editor, "function main() { return 1 }")]
    runs += [run_script.again(editor, runs[0]["script_id"]) for _ in range(3)]
    ids = [r["runtime"]["runtime_id"] for r in runs]
    assert ids[0] == ids[1] == ids[2] and ids[3] != ids[2]
    assert [r["runtime"]["runtime_runs"] for r in runs] == [1, 2, 3, 1]
    assert runs[3]["runtime"]["cache_hit"] is False


def test_runtime_is_recycled_after_a_limit(editor, start_worker, run_script):
    start_worker()
    first = run_script(editor, "function main() { return 1 }")
    run_script(editor, "function main() { function f() { return f() } return f() }")
    after = run_script.again(editor, first["script_id"])
    assert after["runtime"]["runtime_id"] != first["runtime"]["runtime_id"]


def test_runtime_is_recycled_when_its_heap_passes_the_threshold(editor, start_worker, run_script):
    start_worker(SCRIPT_VM_MAX_HEAP_MB="0")  # every heap check finds it too big
    runs = [run_script(editor, "function main() { return 1 }")]
    runs += [run_script.again(editor, runs[0]["script_id"]) for _ in range(3)]
    ids = [r["runtime"]["runtime_id"] for r in runs]
    assert len(set(ids)) == 4  # the heap is checked after every run
    assert [r["runtime"]["runtime_runs"] for r in runs] == [1, 1, 1, 1]


HOSTILE = {
    "deep-result": ("function main() { let a = []; for (let i = 0; i < 3000; i++) a = [a]; return a }", "failed"),
    "surrogate-hash": ("async function main() { return await utils.hash(String.fromCharCode(0xd800)) }", "failed"),
    "surrogate-key": ("async function main() { return await storage.get(String.fromCharCode(0xd800)) }", "failed"),
    "nul-log": ("function main() { console.log('a' + String.fromCharCode(0)); return 1 }", "succeeded"),
    "nul-error": ("function main() { throw new Error('x' + String.fromCharCode(0)) }", "failed"),
    "nul-key": ("async function main() { return await storage.get('k' + String.fromCharCode(0)) }", None),
    "huge-error": ("function main() { throw new Error('e'.repeat(20 * 1024 * 1024)) }", "failed"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_values_never_leave_a_run_running(case, editor, start_worker, run_script):
    source, expected = HOSTILE[case]
    start_worker()
    execution = run_script(editor, source, wait=30)
    assert execution["status"] in ({expected} if expected else {"succeeded", "failed"}), execution
    assert len(execution["error_message"] or "") < 5000
    after = run_script(editor, NEXT)
    assert after["status"] == "succeeded"
