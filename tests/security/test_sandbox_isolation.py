"""Sandbox escapes: nothing a run does reaches the host, another tenant, or the next run.

Real worker processes and real QuickJS; every attack is followed by a normal run on the same
worker that must see pristine globals (tests/security/conftest.py).
"""

VANDAL = """
function main() {
  const attempts = {};
  const tryIt = (name, fn) => { try { fn(); attempts[name] = 'changed'; } catch (e) { attempts[name] = e.name; } };
  tryIt('map', () => { Array.prototype.map = () => 'hacked'; });
  tryIt('stringify', () => { JSON.stringify = () => 'hacked'; });
  tryIt('global', () => { globalThis.x = 'leak'; });
  tryIt('storage', () => { storage.get = async () => 'hacked'; });
  tryIt('storageObject', () => { globalThis.storage = {}; });
  tryIt('objectProto', () => { Object.prototype.polluted = true; });
  tryIt('promise', () => { Promise.prototype.then = null; });
  tryIt('console', () => { console.log = () => {}; });
  tryIt('defineGlobal', () => { Object.defineProperty(globalThis, 'y', { value: 1 }); });
  tryIt('indirectEval', () => { (0, eval)('var z = 1'); });
  // sloppy-mode code cannot throw here: it silently fails to write the frozen global
  tryIt('fnCtor', () => { Function('this.w = 1')(); if (globalThis.w === undefined) throw new TypeError('ignored'); });
  return attempts;
}
"""

INSPECT = """
async function main() {
  await storage.set('probe', 1);
  return {
    map: [1, 2].map(x => x + 1),
    stringify: JSON.stringify({ a: 1 }),
    x: typeof x, y: typeof y, z: typeof z, w: typeof w,
    polluted: ({}).polluted === undefined,
    storageGet: await storage.get('probe'),
    then: typeof Promise.prototype.then,
    tenant: context.tenant.name,
  };
}
"""


def test_a_vandal_run_changes_nothing_for_the_next_run_of_another_tenant(two_tenants, start_worker, run_script):
    tenant_a, tenant_b = two_tenants
    start_worker()
    vandal = run_script(tenant_a, VANDAL)
    assert vandal["status"] == "succeeded", vandal
    assert set(vandal["result"].values()) <= {"TypeError", "SyntaxError"}, vandal["result"]
    inspected = run_script(tenant_b, INSPECT)
    assert inspected["status"] == "succeeded", inspected
    assert inspected["result"] == {
        "map": [2, 3],
        "stringify": '{"a":1}',
        "x": "undefined",
        "y": "undefined",
        "z": "undefined",
        "w": "undefined",
        "polluted": True,
        "storageGet": 1,
        "then": "function",
        "tenant": "globex",
    }
    assert inspected["worker"] == vandal["worker"]


STORAGE = """
async function main(event) {
  if (event.write) {
    await storage.set('shared-name', event.write);
    await storage.set('only-' + event.write, { n: 1 });
  }
  return { value: await storage.get('shared-name'), keys: await storage.list(''), missing: await storage.get('nope') };
}
"""


def test_storage_is_per_tenant_and_persistent(two_tenants, start_worker, run_script):
    tenant_a, tenant_b = two_tenants
    start_worker()
    a = run_script(tenant_a, STORAGE, params={"write": "A"})
    b = run_script(tenant_b, STORAGE, params={"write": "B"})
    assert a["result"] == {"value": "A", "keys": ["only-A", "shared-name"], "missing": None}
    assert b["result"] == {"value": "B", "keys": ["only-B", "shared-name"], "missing": None}
    again = run_script.again(tenant_a, a["script_id"], params={})
    assert again["result"] == {"value": "A", "keys": ["only-A", "shared-name"], "missing": None}


STORAGE_API = """
async function main() {
  const out = {};
  await storage.set('user:1', { name: 'Ann', tags: ['a'] });
  await storage.set('user:2', 42);
  await storage.set('other', 'x');
  out.list = await storage.list('user:');
  out.get = await storage.get('user:1');
  out.deleted = await storage.delete('user:2');
  out.deletedAgain = await storage.delete('user:2');
  out.afterDelete = await storage.list('user:');
  await storage.set('short', 'lived', 0.001);
  out.hash = await utils.hash('hello', 'sha256');
  out.uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(utils.uuid());
  out.errors = [];
  for (const bad of [() => storage.set('k', undefined), () => storage.set('k', 1n), () => storage.get(1),
                     () => storage.set('x'.repeat(201), 1), () => storage.set('big', 'x'.repeat(300 * 1024)),
                     () => utils.hash('x', 'crc32'), () => storage.set('k', 1, -5),
                     () => storage.set('k', 1, Infinity), () => utils.hash('x', { toJSON() { throw 1 } })]) {
    try { await bad(); out.errors.push('no error'); } catch (e) { out.errors.push(e.message); }
  }
  return out;
}
"""


def test_storage_and_utils_api(editor, start_worker, run_script):
    start_worker()
    result = run_script(editor, STORAGE_API)
    assert result["status"] == "succeeded", result
    out = result["result"]
    assert out["list"] == ["user:1", "user:2"]
    assert out["get"] == {"name": "Ann", "tags": ["a"]}
    assert out["deleted"] is True and out["deletedAgain"] is False
    assert out["afterDelete"] == ["user:1"]
    assert out["hash"] == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert out["uuid"] is True
    assert out["errors"] == [
        "storage.set: value must be JSON-serializable, got undefined",
        "storage.set: value must be JSON-serializable: BigInt are forbidden in JSON.stringify",
        "storage.get: key must be a string",
        "storage.set: key is longer than 200 characters",
        "storage.set: value is 300 KiB, over the 256 KiB limit",
        "utils.hash: algorithm must be one of sha256, sha512, sha1, md5",
        "storage.set: ttlSeconds must be a positive, finite number",
        "storage.set: ttlSeconds must be a positive, finite number",  # was stored forever
        "utils.hash: algorithm must be a string",  # its toJSON used to run inside the driver
    ]
    expired = run_script(editor, "async function main() { return await storage.get('short') }")
    assert expired["result"] is None  # its TTL has passed


FROZEN_PROBE = """
function main() {
  const makers = {
    arr: () => [].values(), map: () => new Map().keys(), set: () => new Set().keys(), str: () => ''[Symbol.iterator](),
    re: () => /x/[Symbol.matchAll](''), helper: () => [].values().map((x) => x),
    filter: () => [].values().filter((x) => x), take: () => [].values().take(1),
    flatMap: () => [].values().flatMap((x) => [x]), wrap: () => Iterator.from({ next() { return { done: true }; } }),
    concat: () => Iterator.concat([]), promise: () => Promise.resolve(), asyncfn: () => (async () => {})(),
    typed: () => new Uint8Array(1), view: () => new DataView(new ArrayBuffer(1)), weak: () => new WeakRef({}),
    err: () => new TypeError('x'), agg: () => new AggregateError([]), date: () => new Date(), regexp: () => /x/,
    args: function () { return arguments; }, bound: () => (function () {}).bind(null),
    generatorProto: () => Object.getPrototypeOf((function* () {})()),
    callsite: () => { Error.prepareStackTrace = (e, s) => s; const s = new Error().stack; return s[0]; },
  };
  const unfrozen = [];
  for (const [name, make] of Object.entries(makers)) {
    let proto = Object.getPrototypeOf(make());
    while (proto) {
      if (!Object.isFrozen(proto)) unfrozen.push(name);
      proto = Object.getPrototypeOf(proto);
    }
  }
  return { unfrozen, stackTraceLimit: Error.stackTraceLimit };
}
"""


def test_every_reachable_intrinsic_is_frozen_and_error_hooks_reset(editor, start_worker, run_script):
    start_worker()
    probe = run_script(editor, FROZEN_PROBE)
    assert probe["status"] == "succeeded", probe
    assert probe["result"]["unfrozen"] == []
    setter = "function main() { Error.stackTraceLimit = 0; Error.prepareStackTrace = () => 'hijacked'; }"
    run_script(editor, setter)
    after = run_script(editor, "function main() { return [new Error('x').stack, Error.stackTraceLimit] }")
    stack, limit = after["result"]
    assert "hijacked" not in stack and "at main" in stack and limit > 0


def test_the_driver_cannot_be_called_from_a_script(editor, start_worker, run_script):
    start_worker()
    source = """
function main() {
  Error.prepareStackTrace = (e, sites) => sites;
  const stack = new Error().stack;
  return { stack: typeof stack, hook: typeof Error.prepareStackTrace };
}
"""
    result = run_script(editor, source)["result"]
    assert result == {"stack": "string", "hook": "undefined"}  # no call sites, so no functions


REACH = """
async function main() {
  const viaFunction = Function('return this')();
  const viaEval = (0, eval)('this');
  const viaAsync = await (async function () {}).constructor('return this')();
  const viaGenerator = (function* () {}).constructor('yield this')().next().value;
  const probe = 'return [typeof run, typeof secret, typeof ops, typeof __sr_driver, typeof __sr_hostCall, ' +
    'typeof std, typeof os, typeof require, typeof process, typeof scriptArgs, typeof print, typeof setTimeout, ' +
    'typeof WebAssembly, typeof bjson]';
  return {
    sameGlobal: [viaFunction, viaEval, viaAsync, viaGenerator].every((g) => g === globalThis),
    globals: Object.getOwnPropertyNames(viaEval).sort(),
    fromFunction: Function(probe)(),
    fromEval: eval('(function () {' + probe + '})()'),
    fromIndirectEval: (0, eval)('(function () {' + probe + '})()'),
    // another tenant's key, read through code built at run time
    otherTenantsKey: await Function('return storage.get("secret")')(),
    ownKeys: await eval('storage.list("")'),
  };
}
"""


def test_function_constructor_and_eval_reach_nothing_new(two_tenants, start_worker, run_script, assert_pristine):
    from tests.security.conftest import GLOBALS

    tenant_a, tenant_b = two_tenants
    worker = start_worker()
    stored = run_script(tenant_a, "async function main() { await storage.set('secret', 'of acme') }")
    assert stored["status"] == "succeeded", stored
    reached = run_script(tenant_b, REACH)
    assert reached["status"] == "succeeded", reached
    out = reached["result"]
    assert out["sameGlobal"] is True and out["globals"] == GLOBALS
    assert out["fromFunction"] == out["fromEval"] == out["fromIndirectEval"] == ["undefined"] * 14
    assert out["otherTenantsKey"] is None and out["ownKeys"] == []
    assert_pristine(tenant_b, "globex", worker.name)


MODULES = """
async function main(event) {
  const out = {};
  for (const name of ['std', 'os', 'bjson', event.onDisk, '/etc/passwd', 'data:text/javascript,export default 1']) {
    try { await import(name); out[name] = 'loaded'; } catch (e) { out[name] = e.name + ': ' + e.message; }
  }
  try { await Function("return import('os')")(); out.viaFunction = 'loaded'; }
  catch (e) { out.viaFunction = e.message; }
  try { await (0, eval)("import('std')"); out.viaEval = 'loaded'; } catch (e) { out.viaEval = e.message; }
  try { (0, eval)("import * as os from 'os'"); out.staticViaEval = 'loaded'; }
  catch (e) { out.staticViaEval = e.name; }
  return out;
}
"""


def test_no_module_can_be_imported(client, editor, start_worker, run_script, assert_pristine, tmp_path):
    on_disk = tmp_path / "module.js"  # a real file: the sandbox has no module loader at all
    on_disk.write_text("export default 42;\n")
    worker = start_worker()
    run = run_script(editor, MODULES, params={"onDisk": str(on_disk)})
    assert run["status"] == "succeeded", run
    out = run["result"]
    for name in ("std", "os", "bjson", str(on_disk), "/etc/passwd"):
        assert out[name] == f"ReferenceError: could not load module '{name}'"
    assert out["data:text/javascript,export default 1"].startswith("ReferenceError: could not load module")
    assert out["viaFunction"] == "could not load module 'os'"
    assert out["viaEval"] == "could not load module 'std'"
    assert out["staticViaEval"] == "SyntaxError"
    # a static import does not even save: it is a syntax error in a script
    static = {"name": "static-import", "type": "manual", "source": "import * as std from 'std';\nfunction main() {}"}
    refused = client.post("/api/v1/scripts", json=static, headers=editor)
    assert refused.status_code == 422
    assert refused.get_json()["error"]["fields"]["source"].startswith("SyntaxError")
    assert_pristine(editor, "acme", worker.name)


POLLUTE = """
async function main() {
  const attempts = {};
  const tryIt = (name, fn) => { try { fn(); attempts[name] = 'changed'; } catch (e) { attempts[name] = e.name; } };
  tryIt('objectProtoAccessor', () => Object.defineProperty(Object.prototype, 'toJSON', { get: () => () => 'x' }));
  tryIt('objectProtoSetter', () => { ({}).__proto__.then = () => {}; });
  tryIt('arrayIterator', () => { Array.prototype[Symbol.iterator] = function* () { yield 'hacked'; }; });
  tryIt('storageProto', () => { Object.getPrototypeOf(storage).get = () => 'hacked'; });
  tryIt('storageSetProto', () => Object.setPrototypeOf(storage, { get: () => 'hacked' }));
  tryIt('storageMethodProto', () => { Object.getPrototypeOf(storage.get).call = () => 'hacked'; });
  tryIt('utilsHash', () => { if (!Reflect.defineProperty(utils, 'hash', { value: 1 })) throw new TypeError(); });
  tryIt('consoleProto', () => { Object.getPrototypeOf(console).log = () => {}; });
  tryIt('contextTenant', () => { context.tenant.name = 'globex'; });
  tryIt('contextReplace', () => { globalThis.context = { tenant: { name: 'globex' } }; });
  tryIt('promiseThen', () => { Object.getPrototypeOf(storage.get('x')).then = () => 'hacked'; });
  tryIt('jsonParse', () => { JSON.parse = () => ({ hacked: true }); });
  // JSON's "__proto__" is an own property, never the prototype
  const parsed = JSON.parse('{"__proto__": {"polluted": true}}');
  await storage.set('proto', parsed);
  const back = await storage.get('proto');
  return {
    attempts,
    parsedPolluted: ({}).polluted !== undefined,
    back: Object.getOwnPropertyNames(back),
    backProto: Object.getPrototypeOf(back) === Object.prototype,
    hostStillWorks: [await storage.get('proto') !== null, await utils.hash('abc')],
    tenant: context.tenant.name,
  };
}
"""


def test_prototype_pollution_reaches_no_host_call_and_no_later_run(
    two_tenants, start_worker, run_script, assert_pristine
):
    tenant_a, tenant_b = two_tenants
    worker = start_worker()
    run = run_script(tenant_a, POLLUTE)
    assert run["status"] == "succeeded", run
    out = run["result"]
    assert set(out["attempts"].values()) == {"TypeError"}, out["attempts"]
    assert out["parsedPolluted"] is False
    assert out["back"] == ["__proto__"] and out["backProto"] is True
    assert out["hostStillWorks"] == [True, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"]
    assert out["tenant"] == "acme"
    assert_pristine(tenant_b, "globex", worker.name)


# A result's toJSON runs while the result is serialised, after main settled: anything it
# queued used to run at the start of the next run, with that run's context and storage.
LEFTOVER = """
function main() {
  return {
    toJSON() {
      Promise.resolve().then(() => {
        console.log('left behind, seeing', context && context.tenant.name);
        storage.set('pwned', 'by acme').catch(() => {});
      });
      queueMicrotask(() => storage.set('pwned', 'by acme, via queueMicrotask').catch(() => {}));
      return 'done';
    },
  };
}
"""


def test_work_left_queued_by_a_run_never_runs_in_the_next_one(two_tenants, start_worker, run_script, assert_pristine):
    tenant_a, tenant_b = two_tenants
    worker = start_worker()
    run = run_script(tenant_a, LEFTOVER)
    assert run["status"] == "succeeded" and run["result"] == "done", run
    after = assert_pristine(tenant_b, "globex", worker.name)  # its storage has no 'pwned'
    assert after["logs"] == []
    mine = run_script(tenant_a, "async function main() { return await storage.get('pwned') }")
    assert mine["result"] is None


def test_endless_work_left_queued_ends_with_the_runtime(editor, start_worker, run_script, assert_pristine):
    worker = start_worker()
    source = (
        "function main() { return { toJSON() { (function again() { Promise.resolve().then(again); })(); return 1; } } }"
    )
    run = run_script(editor, source, limits={"cpu_seconds": 1})
    assert run["status"] == "succeeded" and run["result"] == 1, run  # main's value stands
    after = assert_pristine(editor, "acme", worker.name)
    assert after["runtime"]["runtime_id"] != run["runtime"]["runtime_id"]  # the busy runtime was dropped
