"""Hostile values at the sandbox boundary: what is thrown, returned, logged, or handed to a
host call. Each ends as a correct success or a failed run with its stated error kind, never
reaches or crashes the worker, and leaves the next run on the same worker pristine."""

import pytest

THROWING_PROXY = "new Proxy({}, { get() { throw new Error('trap'); }, getPrototypeOf() { throw new Error('trap'); } })"

# name: (source, status, error_kind, error_message or result)
THROWN = {
    "proxy-with-throwing-traps-async": (
        f"async function main() {{ await null; throw {THROWING_PROXY}; }}",
        "exception",
        "Uncaught non-Error value: (a thrown object that cannot be turned into text)",
    ),
    "proxy-with-throwing-traps-sync": (
        f"function main() {{ throw {THROWING_PROXY}; }}",
        "exception",
        "Uncaught non-Error value: (a thrown object that cannot be turned into text)",
    ),
    "error-with-throwing-message-getter": (
        "async function main() { const e = new Error('x');"
        " Object.defineProperty(e, 'message', { get() { throw e; } }); throw e; }",
        "exception",
        "Error: (a thrown Error whose name or message cannot be read)",
    ),
    "symbol": ("function main() { throw Symbol('s'); }", "exception", "Uncaught non-Error value: Symbol(s)"),
    "bigint": ("function main() { throw 12n; }", "exception", "Uncaught non-Error value: 12"),
    "object-with-throwing-toJSON-and-toString": (
        "function main() { throw { toJSON() { throw 1; }, toString() { throw 2; } }; }",
        "exception",
        "Uncaught non-Error value: (a thrown object that cannot be turned into text)",
    ),
    "rejected-with-proxy-of-an-error": (
        "async function main() { throw new Proxy(new TypeError('wrapped'), {}); }",
        "exception",
        "TypeError: wrapped",
    ),
}


def _run_cases(cases, headers, run_script, assert_pristine, worker, **run_args):
    for name, (source, kind, expected) in cases.items():
        run = run_script(headers, source, **run_args)
        if kind == "succeeded":
            assert (run["status"], run["result"]) == ("succeeded", expected), (name, run)
        else:
            assert (run["status"], run["error_kind"]) == ("failed", kind), (name, run)
            assert run["error_message"] == expected, name
        assert run["worker"] == worker.name
        assert_pristine(headers, "acme", worker.name)


def test_thrown_values_end_as_exceptions(editor, start_worker, run_script, assert_pristine):
    worker = start_worker()
    _run_cases(THROWN, editor, run_script, assert_pristine, worker)


RETURNED = {
    "cyclic": (
        "function main() { const a = {}; a.self = a; return a; }",
        "exception",
        "TypeError: main returned a value that is not JSON-serializable: circular reference",
    ),
    "bigint": (
        "function main() { return { n: 1n }; }",
        "exception",
        "TypeError: main returned a value that is not JSON-serializable: BigInt are forbidden in JSON.stringify",
    ),
    "very-deep": (
        "function main() { let a = []; for (let i = 0; i < 100000; i++) a = [a]; return a; }",
        "stack_overflow",
        "stack limit 1024 KiB exceeded (recursion too deep)",
    ),
    "huge": (
        "function main() { return { big: 'x'.repeat(3 * 1024 * 1024) }; }",
        "result_too_large",
        "result limit 1024 KiB exceeded (the result is 3072 KiB)",
    ),
    "undefined": ("function main() { return undefined; }", "succeeded", None),
    "function": ("function main() { return () => 1; }", "succeeded", None),
    "symbol": ("function main() { return Symbol('s'); }", "succeeded", None),
    "functions-and-symbols-inside": (
        "function main() { return { f() {}, s: Symbol('s'), list: [() => 1, Symbol('t')] }; }",
        "succeeded",
        {"list": [None, None]},
    ),
    "proxy-whose-ownKeys-throws": (
        "function main() { return new Proxy({}, { ownKeys() { throw new Error('no keys'); } }); }",
        "exception",
        "TypeError: main returned a value that is not JSON-serializable: no keys",
    ),
    "toJSON-throws-a-throwing-proxy": (
        f"function main() {{ return {{ toJSON() {{ throw {THROWING_PROXY}; }} }}; }}",
        "exception",
        "TypeError: main returned a value that is not JSON-serializable: "
        "(a thrown object that cannot be turned into text)",
    ),
    "getter-that-never-returns": (
        "function main() { return { get x() { for (;;) {} } }; }",
        "timeout",
        "CPU time limit 1 s exceeded",
    ),
    "thenable-that-never-settles": (
        "function main() { return { then() {} }; }",
        "exception",
        "main's promise never settled (nothing left to wait for)",
    ),
    "promise-subclass-with-hostile-species": (
        "class Evil extends Promise { static get [Symbol.species]() { throw new Error('species'); } }"
        " function main() { return Evil.resolve(7); }",
        "exception",
        "Error: species",
    ),
    "promise-with-own-then": (
        "function main() { const p = Promise.resolve(1);"
        " Object.defineProperty(p, 'then', { value: (ok) => ok('its own then') }); return p; }",
        "succeeded",
        "its own then",  # a thenable's then decides, as in any JS engine
    ),
}


def test_returned_values_end_as_a_result_or_a_stated_error(editor, start_worker, run_script, assert_pristine):
    worker = start_worker()
    _run_cases(RETURNED, editor, run_script, assert_pristine, worker, limits={"cpu_seconds": 1})


INTO_HOST_CALLS = """
async function main() {
  const out = {};
  const attempt = async (name, fn) => {
    try { out[name] = { ok: await fn() }; } catch (e) { out[name] = { error: e.message }; }
  };
  const throwingProxy = new Proxy({}, { get() { throw new Error('trap'); }, ownKeys() { throw new Error('keys'); } });
  await attempt('proxyValue', () => storage.set('k', throwingProxy));
  await attempt('throwingGetter', () => storage.set('k', { get a() { throw new Error('getter'); } }));
  await attempt('throwingToJSON', () => storage.set('k', { toJSON() { throw new Error('toJSON'); } }));
  await attempt('toJSONThrowsProxy', () => storage.set('k', { toJSON() { throw throwingProxy; } }));
  await attempt('cyclic', () => { const a = []; a.push(a); return storage.set('k', a); });
  await attempt('bigint', () => storage.set('k', [1n]));
  await attempt('symbolValue', () => storage.set('k', Symbol('v')));
  await attempt('symbolKey', () => storage.set(Symbol('k'), 1));
  await attempt('toPrimitiveKey', () => storage.get({ [Symbol.toPrimitive]() { return 'k'; } }));
  await attempt('stringObjectKey', () => storage.get(new String('k')));
  await attempt('valueOfTtl', () => storage.set('k', 1, { valueOf() { return 5; } }));
  await attempt('proxyPrefix', () => storage.list(new Proxy({}, {})));
  await attempt('proxyHashText', () => utils.hash(new Proxy(new String('x'), {})));
  await attempt('proxyAlgorithm', () => utils.hash('x', { toString() { return 'sha256'; } }));
  // Harmless ones store what JSON.stringify makes of them.
  await attempt('toPrimitiveValue', async () => {
    await storage.set('k', { [Symbol.toPrimitive]() { throw new Error('never called'); }, v: 1 });
    return storage.get('k');
  });
  await attempt('arraySpecies', async () => {
    class Evil extends Array { static get [Symbol.species]() { throw new Error('species'); } }
    await storage.set('k', Evil.from([1, 2]));
    return storage.get('k');
  });
  await attempt('iteratorOverride', async () => {
    const a = [1, 2];
    Object.defineProperty(a, Symbol.iterator, { value: function* () { throw new Error('iterated'); } });
    await storage.set('k', a);
    return storage.get('k');
  });
  // Host objects wrapped and called with odd receivers still reach only this tenant's storage.
  await attempt('proxiedStorage', async () => {
    const s = new Proxy(storage, { get(target, p) { return target[p]; } });
    await s.set('k', 'through a proxy');
    return Reflect.apply(storage.get, throwingProxy, ['k']);
  });
  return out;
}
"""

EXPECTED_INTO_HOST_CALLS = {
    "proxyValue": {"error": "storage.set: value must be JSON-serializable: trap"},
    "throwingGetter": {"error": "storage.set: value must be JSON-serializable: getter"},
    "throwingToJSON": {"error": "storage.set: value must be JSON-serializable: toJSON"},
    "toJSONThrowsProxy": {
        "error": "storage.set: value must be JSON-serializable: (a thrown object that cannot be turned into text)"
    },
    "cyclic": {"error": "storage.set: value must be JSON-serializable: circular reference"},
    "bigint": {"error": "storage.set: value must be JSON-serializable: BigInt are forbidden in JSON.stringify"},
    "symbolValue": {"error": "storage.set: value must be JSON-serializable, got symbol"},
    "symbolKey": {"error": "storage.set: key must be a string"},
    "toPrimitiveKey": {"error": "storage.get: key must be a string"},
    "stringObjectKey": {"error": "storage.get: key must be a string"},
    "valueOfTtl": {"error": "storage.set: ttlSeconds must be a positive, finite number"},
    "proxyPrefix": {"error": "storage.list: prefix must be a string"},
    "proxyHashText": {"error": "utils.hash: text must be a string"},
    "proxyAlgorithm": {"error": "utils.hash: algorithm must be a string"},
    "toPrimitiveValue": {"ok": {"v": 1}},
    "arraySpecies": {"ok": [1, 2]},
    "iteratorOverride": {"ok": [1, 2]},
    "proxiedStorage": {"ok": "through a proxy"},
}


def test_proxies_getters_and_symbols_handed_to_host_calls(editor, start_worker, run_script, assert_pristine):
    worker = start_worker()
    run = run_script(editor, INTO_HOST_CALLS)
    assert run["status"] == "succeeded", run
    assert run["result"] == EXPECTED_INTO_HOST_CALLS
    assert_pristine(editor, "acme", worker.name)


# Host calls made from inside a getter or toJSON that a host call (or console) is running.
REENTRANT = """
async function main() {
  let inner, hashed;
  const value = {
    get a() { inner = storage.set('inner', 'set from a getter'); return 1; },
    toJSON() { hashed = utils.hash('from toJSON'); return { a: this.a, seen: 'outer' }; },
  };
  await storage.set('outer', value);
  await inner;
  console.log({ toJSON() { console.log('logged while logging'); storage.set('fromLog', 1); return 'outer log'; } });
  // A value that stores itself from its own toJSON: the re-entry goes on up to the stack limit.
  const loop = { toJSON() { storage.set('loop', loop).catch(() => {}); return 1; } };
  let loopError = null;
  try { await storage.set('loop', loop); } catch (e) { loopError = e.message; }
  return {
    outer: await storage.get('outer'),
    inner: await storage.get('inner'),
    hashed: (await hashed).length,
    fromLog: await storage.get('fromLog'),
    loopError,
    loop: await storage.get('loop'),
  };
}
"""


def test_host_calls_reentered_from_getters_and_tojson(editor, start_worker, run_script, assert_pristine):
    worker = start_worker()
    run = run_script(editor, REENTRANT)
    assert run["status"] == "succeeded", run
    assert run["result"] == {
        "outer": {"a": 1, "seen": "outer"},
        "inner": "set from a getter",
        "hashed": 64,
        "fromLog": 1,
        "loopError": None,  # the innermost set failed at the stack limit; every outer one stored 1
        "loop": 1,
    }
    assert [entry["message"] for entry in run["logs"]] == ["logged while logging", '"outer log"']
    assert_pristine(editor, "acme", worker.name)


def _log_bytes(logs: list[dict]) -> int:
    """What the cap counts: each line's UTF-8 size plus 48 bytes for its time and level."""
    return sum(len(entry["message"].encode()) + 48 for entry in logs)


@pytest.fixture
def small_log_worker(start_worker):
    return start_worker(SCRIPT_LOG_KB="1")


def test_console_capture_with_the_log_cap(editor, small_log_worker, run_script):
    source = (
        "function main() { for (let i = 0; i < 200; i++) console.info('line', i);"
        " console.error(new Error('boom')); return 'done' }"
    )
    execution = run_script(editor, source)
    assert execution["status"] == "succeeded" and execution["result"] == "done"
    logs = execution["logs"]
    assert logs[0]["level"] == "info" and logs[0]["message"] == "line 0" and logs[0]["time"].endswith("Z")
    kept = logs[:-1]
    assert len(kept) == 18 and _log_bytes(kept) <= 1024  # 10 × (6 + 48) + 8 × (7 + 48)
    assert logs[-1] == {
        "time": kept[-1]["time"],
        "level": "warn",
        "message": "log limit 1 KiB reached: 183 later log lines dropped",
    }


@pytest.mark.parametrize(
    "text",
    ["é" * 50, "😀" * 25, "€" * 34],  # 100, 100 and 102 bytes of UTF-8 in 50, 50 and 34 UTF-16 units
    ids=["two-byte", "four-byte", "three-byte"],
)
def test_the_log_cap_counts_bytes_of_multibyte_text(text, editor, small_log_worker, run_script):
    execution = run_script(
        editor, "function main(event) { for (let i = 0; i < 100; i++) console.log(event.t); }", params={"t": text}
    )
    assert execution["status"] == "succeeded", execution
    kept = execution["logs"][:-1]
    assert [entry["message"] for entry in kept] == [text] * 6  # 6 × (100 + 48) ≤ 1024 < 7 × (100 + 48)
    assert _log_bytes(kept) <= 1024
    assert execution["logs"][-1]["message"] == "log limit 1 KiB reached: 94 later log lines dropped"


FLOODS = {
    "tight-loop": (
        "function main() { for (let i = 0; i < 1000000; i++) console.log('x', i); return 'flooded'; }",
        "succeeded",
        "log limit 1 KiB reached: 999981 later log lines dropped",
    ),
    "endless-loop": (
        "function main() { for (let i = 0; ; i++) console.warn(i); }",
        "timeout",
        None,
    ),
    "one-huge-message": (
        "function main() { console.log('small'); console.log('x'.repeat(8 * 1024 * 1024)); return 'flooded'; }",
        "succeeded",
        "log limit 1 KiB reached: 1 later log line dropped",
    ),
}


def test_log_floods_are_cut_at_the_cap_and_the_run_goes_on(editor, small_log_worker, run_script, assert_pristine):
    for name, (source, status, notice) in FLOODS.items():
        run = run_script(editor, source, limits={"cpu_seconds": 1})
        if status == "succeeded":
            assert (run["status"], run["result"]) == ("succeeded", "flooded"), (name, run)
        else:
            assert (run["status"], run["error_kind"]) == ("failed", status), (name, run)
            assert run["error_message"] == "CPU time limit 1 s exceeded"
        assert _log_bytes(run["logs"][:-1]) <= 1024, name
        last = run["logs"][-1]["message"]
        assert last == notice if notice else last.startswith("log limit 1 KiB reached: "), (name, last)
        assert_pristine(editor, "acme", small_log_worker.name)


UNPRINTABLE = f"""
function main() {{
  const cyclic = {{}};
  cyclic.self = cyclic;
  const badError = new Error('x');
  Object.defineProperty(badError, 'stack', {{ get() {{ throw 1; }} }});
  Object.defineProperty(badError, 'message', {{ get() {{ throw 2; }} }});
  console.log({THROWING_PROXY});
  console.log({{ toString() {{ throw 1; }}, toJSON() {{ throw 2; }} }});
  console.log(1n, Symbol('s'), undefined, null, cyclic);
  console.log(badError);
  console.log(function named() {{}});
  return 'logged';
}}
"""


def test_values_that_cannot_be_printed_are_logged_as_markers(editor, start_worker, run_script, assert_pristine):
    worker = start_worker()
    run = run_script(editor, UNPRINTABLE)
    assert run["status"] == "succeeded" and run["result"] == "logged", run
    assert [entry["message"] for entry in run["logs"]] == [
        "[object that cannot be printed]",
        "[object that cannot be printed]",
        "1 Symbol(s) undefined null [object Object]",
        "[object that cannot be printed]",
        "function named() {}",
    ]
    assert_pristine(editor, "acme", worker.name)
