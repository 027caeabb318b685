"""A hostile tenant against another on one worker (so both share its sandbox process).

Tenant A (acme) plants what it can in the engine; then tenant B (globex) runs ordinary scripts
on the same worker. B must see only B, and A must get nothing of B. Each attack was a working
escape before runtimes were kept per tenant (docs/reliability.md, "Tenant isolation").
"""

# Call sites of the stack, as V8's Error.prepareStackTrace hands them out (null when it cannot).
SITES = """
let sites = null;
try {
  Error.prepareStackTrace = (e, s) => s;
  const s = new Error().stack;
  if (Array.isArray(s)) sites = s;
} catch (e) {}
try { Error.prepareStackTrace = undefined; } catch (e) {}
"""

# A's code, planted to run inside a later run: a FinalizationRegistry whose callback fires when
# an object it registered is freed, with that object held only by a function left in
# Error.prepareStackTrace (set again from a result's toJSON, after the platform reset it). It
# also reaches its own compiled factory and the platform's run entry point through stack-trace
# call sites. What it loots it keeps on the factory, and reports on its next run.
PLANT = (
    SITES
    + """
const factory = sites && sites[0] && sites[0].getFunction ? sites[0].getFunction() : undefined;
const entry = sites && sites[1] && sites[1].getFunction ? sites[1].getFunction() : undefined;
let loot = [];
try { if (factory) { factory.loot = factory.loot || []; loot = factory.loot; } } catch (e) {}

function plant() {
  const registry = new FinalizationRegistry(async () => {
    try {
      const tenant = context && context.tenant.name;
      if (entry) entry('{"context":{"tenant":{"id":1,"name":"acme"}},"logCap":1e9,"seed":[1,2]}',
                       () => () => ({ status: 302, headers: { location: 'https://evil.example/' } }), '{}');
      console.log('acme was here');
      loot.push({ tenant, keys: await storage.list('') });
      await storage.set('pwned', 'by acme');
    } catch (e) { loot.push(String(e)); }
    plant();
  });
  const held = {};
  registry.register(held, 'x');
  try { Error.prepareStackTrace = () => held; } catch (e) {}
  try { if (factory) factory.registry = registry; } catch (e) {}
}

function main() {
  return {
    toJSON() {
      plant();
      return { reached: { factory: typeof factory, entry: typeof entry }, loot };
    },
  };
}
"""
)

VICTIM = """
async function main(event) {
  await storage.set('api-key', 'globex-secret-key');
  const big = [];
  for (let i = 0; i < 200; i++) big.push({ i, pad: 'y'.repeat(100) });  // garbage: triggers a GC
  return {
    tenant: context.tenant.name,
    keys: await storage.list(''),
    pwned: await storage.get('pwned'),
  };
}
"""


def test_a_planted_finalizer_never_runs_in_another_tenants_run(two_tenants, start_worker, run_script):
    acme, globex = two_tenants
    start_worker()
    planted = run_script(acme, PLANT)
    assert planted["status"] == "succeeded", planted
    assert planted["result"]["reached"] == {"factory": "undefined", "entry": "undefined"}
    for _ in range(3):
        victim = run_script(globex, VICTIM)
        assert victim["status"] == "succeeded", victim
        assert victim["worker"] == planted["worker"]
        assert victim["result"] == {"tenant": "globex", "keys": ["api-key"], "pwned": None}
        assert victim["logs"] == []
    again = run_script.again(acme, planted["script_id"])
    assert again["status"] == "succeeded", again
    assert again["result"]["loot"] == []
    assert again["logs"] == []


ENDPOINT_VICTIM = """
async function main(req) {
  return { status: 200, body: { tenant: context.tenant.name, said: req.query.say || null } };
}
"""


def test_a_planted_run_cannot_answer_another_tenants_endpoint_calls(client, two_tenants, start_worker, run_script):
    acme, globex = two_tenants
    start_worker()
    created = client.post(
        "/api/v1/scripts",
        json={
            "name": "hello",
            "type": "endpoint",
            "endpoint_path": "/hello",
            "endpoint_method": "GET",
            "source": ENDPOINT_VICTIM,
        },
        headers=globex,
    )
    assert created.status_code == 201, created.get_json()
    assert client.get("/api/scripts/hello", headers=globex).status_code == 200  # compiled, cached
    assert run_script(acme, PLANT)["status"] == "succeeded"
    for n in range(3):
        answer = client.get(f"/api/scripts/hello?say={n}", headers=globex)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        assert answer.get_json() == {"tenant": "globex", "said": str(n)}


# Two values of Math.random are enough to recover a xorshift64* state (the engine's own
# generator) and predict the next value, if the state carries over from run to run.
PREDICT = """
function main() {
  const a = Math.random(), b = Math.random();
  const M = (1n << 64n) - 1n, C = 0x2545F4914F6CDD1Dn;
  let inv = 1n;
  for (let i = 0; i < 7; i++) inv = (inv * (2n - C * inv)) & M;
  const step = (x) => { x ^= x >> 12n; x ^= (x << 25n) & M; x ^= x >> 27n; return x; };
  const ta = BigInt(Math.floor(a * 2 ** 52)), tb = BigInt(Math.floor(b * 2 ** 52));
  for (let low = 0n; low < 4096n; low++) {
    const x2 = step((((ta << 12n) | low) * inv) & M);
    if ((((x2 * C) & M) >> 12n) === tb) return Number(((step(x2) * C) & M) >> 12n) / 2 ** 52;
  }
  return null;
}
"""
DRAW = "function main() { return Math.random(); }"


def test_math_random_cannot_be_predicted_from_another_run(two_tenants, start_worker, run_script):
    acme, globex = two_tenants
    start_worker()
    for victim in (globex, acme):  # another tenant, and the same tenant's next run
        predicted = run_script(acme, PREDICT)
        drawn = run_script(victim, DRAW)
        assert predicted["status"] == drawn["status"] == "succeeded", (predicted, drawn)
        assert drawn["worker"] == predicted["worker"]
        assert isinstance(drawn["result"], float) and 0 <= drawn["result"] < 1
        assert drawn["result"] != predicted["result"]


HOG = (
    SITES
    + """
function main() {
  const parked = [];
  const factory = sites ? sites[0].getFunction() : null;
  try { if (factory) factory.hog = 'x'.repeat(56 * 1024 * 1024); parked.push('factory'); } catch (e) {}
  try { Symbol.for('z'.repeat(8 * 1024 * 1024)); } catch (e) {}
  return parked;
}
"""
)
ORDINARY = """
function main() {
  const chunks = [];
  for (let i = 0; i < 40; i++) chunks.push('m'.repeat(1024 * 1024) + i);  // 40 MiB, under 64
  return chunks.length;
}
"""


def test_memory_parked_by_one_run_does_not_fail_the_next(two_tenants, start_worker, run_script):
    acme, globex = two_tenants
    start_worker()
    victims = [(headers, run_script(headers, ORDINARY)["script_id"]) for headers in (globex, acme)]
    hog = run_script(acme, HOG)
    assert hog["status"] == "succeeded", hog
    for headers, script_id in victims:
        ordinary = run_script.again(headers, script_id)
        assert ordinary["status"] == "succeeded", ordinary
        assert ordinary["result"] == 40
        assert ordinary["worker"] == hog["worker"]


# The run entry point called by the script itself, with a log cap of its own choosing.
LOG_LIFT = (
    SITES
    + """
function main() {
  const entry = sites && sites[1] ? sites[1].getFunction() : undefined;
  const flood = () => { for (let i = 0; i < 4000; i++) console.log('z'.repeat(1000)); return 'done'; };
  if (entry) {
    try { entry('{"context":{"tenant":{"id":1,"name":"acme"}},"logCap":1e9,"seed":[1,2]}', () => flood, '{}'); }
    catch (e) {}
  }
  return flood();
}
"""
)


def test_the_log_cap_cannot_be_lifted_by_a_script(editor, start_worker, run_script):
    start_worker()
    flooded = run_script(editor, LOG_LIFT)
    kept = sum(len(entry["message"].encode()) for entry in flooded["logs"])
    assert kept <= 256 * 1024
    assert flooded["logs"][-1]["message"].startswith("log limit 256 KiB reached")


def test_each_tenant_runs_in_a_runtime_of_its_own(two_tenants, start_worker, run_script):
    acme, globex = two_tenants
    start_worker()
    first = run_script(acme, "function main() { return 1 }")
    other = run_script(globex, "function main() { return 2 }")
    again = run_script.again(acme, first["script_id"])
    assert first["worker"] == other["worker"] == again["worker"]
    assert other["runtime"]["runtime_id"] != first["runtime"]["runtime_id"]
    assert again["runtime"]["runtime_id"] == first["runtime"]["runtime_id"]  # kept warm: the compile cache
    assert again["runtime"]["cache_hit"] is True
