"""Randomness in the sandbox: crypto from a ChaCha20 stream keyed per run by the OS, and
Math.random seeded per run (docs/scripting.md). In-process: one QuickJS runtime, no worker."""

import json
import re
from pathlib import Path

import pytest
import quickjs

from worker.runtime.engine import RunLimits, Runtime

CHACHA20 = (Path(__file__).parents[1] / "worker" / "runtime" / "chacha20.js").read_text()
LIMITS = RunLimits(cpu_seconds=5, memory_bytes=64 << 20, log_bytes=256 << 10, result_bytes=1 << 20)


def test_chacha20_block_matches_the_rfc_8439_test_vector():
    # RFC 8439 section 2.3.2: key 00..1f, nonce 00:00:00:09:00:00:00:4a:00:00:00:00, counter 1.
    ctx = quickjs.Context()
    ctx.eval(CHACHA20)
    key = [int.from_bytes(bytes(range(i, i + 4)), "little") for i in range(0, 32, 4)]
    nonce = [0x09000000, 0x4A000000, 0]
    out = json.loads(ctx.eval(f"JSON.stringify(__sr_chacha20Block({key}, 1, {nonce}, []))"))
    assert bytes(out).hex() == (
        "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e"
        "d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e"
    )


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    return Runtime(1 << 20)


def run(runtime: Runtime, source: str) -> dict:
    request = {"script_id": str(hash(source)), "version": 1, "source": source, "event_json": "{}", "context": {}}
    outcome = runtime.run(request, LIMITS, lambda calls: [])
    assert outcome.status == "succeeded", outcome
    return json.loads(outcome.result_json)


CRYPTO = """
function main() {
  const errors = [];
  for (const bad of [new Float64Array(2), new DataView(new ArrayBuffer(4)), [1, 2], 'x', new Uint8Array(65537)]) {
    try { crypto.getRandomValues(bad); errors.push('no error'); } catch (e) { errors.push(e.name); }
  }
  const bytes = new Uint8Array(4096);
  const same = crypto.getRandomValues(bytes) === bytes;
  const counts = new Array(256).fill(0);
  for (const b of bytes) counts[b]++;
  const words = crypto.getRandomValues(new BigUint64Array(4));
  const view = new Uint8Array(new ArrayBuffer(16), 4, 8);
  crypto.getRandomValues(view);
  const uuids = [crypto.randomUUID(), crypto.randomUUID(), utils.uuid()];
  return {
    errors, same, maxCount: Math.max(...counts), zeros: counts.filter((c) => c === 0).length,
    words: Array.from(words, String), outside: Array.from(new Uint8Array(view.buffer).slice(12)),
    uuids, prefix: Array.from(bytes.slice(0, 16)),
  };
}
"""
UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"


def test_crypto_get_random_values_and_random_uuid(runtime):
    first, second = run(runtime, CRYPTO), run(runtime, CRYPTO)
    assert first["errors"] == [
        "TypeMismatchError",
        "TypeMismatchError",
        "TypeMismatchError",
        "TypeMismatchError",
        "QuotaExceededError",
    ]
    assert first["same"] is True
    assert first["maxCount"] < 40 and first["zeros"] == 0  # 4096 bytes: ~16 of each value
    assert len(set(first["words"])) == 4
    assert first["outside"] == [0, 0, 0, 0]  # a view fills only its own bytes
    assert all(re.match(UUID, u) for u in first["uuids"] + second["uuids"])
    assert len(set(first["uuids"] + second["uuids"])) == 6
    assert first["prefix"] != second["prefix"]  # keyed afresh for every run


def test_math_random_is_seeded_per_run(runtime):
    draws = "function main() { return Array.from({ length: 1000 }, () => Math.random()); }"
    a, b = run(runtime, draws), run(runtime, draws)
    assert a != b
    assert all(0 <= x < 1 for x in a) and 0.4 < sum(a) / len(a) < 0.6
    assert len(set(a)) == 1000


def test_crypto_refuses_outside_a_run(runtime):
    run(runtime, "function main() { return 1; }")
    with pytest.raises(quickjs.JSException, match="crypto is only available during a run"):
        runtime.ctx.eval("crypto.randomUUID()")


def test_the_driver_refuses_a_call_without_its_secret(runtime):
    with pytest.raises(quickjs.JSException, match="not allowed"):
        runtime._driver("begin", "guess" * 8, '{"context":{},"logCap":1e12,"seed":[]}')
