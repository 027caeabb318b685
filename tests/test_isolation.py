"""Nothing one run does is seen by the next: globals, intrinsics, host objects, other tenants."""

import pytest

from tests.conftest import bearer

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


@pytest.fixture
def two_tenants(make_user, make_token):
    make_user("a@acme.io", "acme", "editor")
    make_user("b@globex.io", "globex", "editor")
    return bearer(make_token("a@acme.io", "acme")), bearer(make_token("b@globex.io", "globex"))


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
                     () => utils.hash('x', 'crc32'), () => storage.set('k', 1, -5)]) {
    try { await bad(); out.errors.push('no error'); } catch (e) { out.errors.push(e.message); }
  }
  return out;
}
"""


def test_storage_and_utils_api(editor_headers, start_worker, run_script):
    start_worker()
    result = run_script(editor_headers, STORAGE_API)
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
        "storage.set: ttlSeconds must be a positive number",
    ]
    expired = run_script(editor_headers, "async function main() { return await storage.get('short') }")
    assert expired["result"] is None  # its TTL has passed


@pytest.fixture
def editor_headers(make_user, make_token):
    make_user("ed@acme.io", "acme", "editor")
    return bearer(make_token("ed@acme.io"))


def test_console_capture_with_the_log_cap(editor_headers, start_worker, run_script):
    start_worker(SCRIPT_LOG_KB="1")
    source = (
        "function main() { for (let i = 0; i < 200; i++) console.info('line', i);"
        " console.error(new Error('boom')); return 'done' }"
    )
    execution = run_script(editor_headers, source)
    assert execution["status"] == "succeeded" and execution["result"] == "done"
    logs = execution["logs"]
    assert logs[0]["level"] == "info" and logs[0]["message"] == "line 0" and logs[0]["time"].endswith("Z")
    assert 10 < len(logs) < 40
    assert logs[-1]["level"] == "warn"
    assert logs[-1]["message"].startswith("log limit 1 KiB reached: ")
    assert logs[-1]["message"].endswith("later log lines dropped")


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


def test_every_reachable_intrinsic_is_frozen_and_error_hooks_reset(editor_headers, start_worker, run_script):
    start_worker()
    probe = run_script(editor_headers, FROZEN_PROBE)
    assert probe["status"] == "succeeded", probe
    assert probe["result"]["unfrozen"] == []
    setter = "function main() { Error.stackTraceLimit = 0; Error.prepareStackTrace = () => 'hijacked'; }"
    run_script(editor_headers, setter)
    after = run_script(editor_headers, "function main() { return [new Error('x').stack, Error.stackTraceLimit] }")
    stack, limit = after["result"]
    assert "hijacked" not in stack and "at main" in stack and limit > 0


def test_the_driver_cannot_be_called_from_a_script(editor_headers, start_worker, run_script):
    start_worker()
    source = """
function main() {
  Error.prepareStackTrace = (e, sites) => sites.map((s) => s.getFunction()).filter(Boolean);
  const driver = new Error().stack.find((f) => f.name === '__sr_driver');
  if (!driver) return 'no driver on the stack';
  try { driver('begin', 'guess', '{"context":{},"logCap":1e12,"seed":[1,2]}'); return 'called'; }
  catch (e) { return e.message; }
}
"""
    result = run_script(editor_headers, source)["result"]
    assert result in ("not allowed", "no driver on the stack")
