"""Shared by the security suites: callers in two tenants, and the check that a run left
nothing behind for the next one."""

import pytest

from tests.conftest import bearer


def _words(text: str) -> list[str]:
    return sorted(text.split())


# What a script sees on a fresh runtime; compared after every attack in tests/security.
PRISTINE = """
async function main() {
  return {
    globals: Object.getOwnPropertyNames(globalThis).sort(),
    objectProto: Object.getOwnPropertyNames(Object.prototype).sort(),
    arrayProtoFrozen: Object.isFrozen(Array.prototype),
    map: [1, 2].map((x) => x + 1),
    json: JSON.stringify({ a: [1, { b: 2 }] }),
    polluted: ({}).polluted === undefined && [].polluted === undefined,
    toStringTag: Object.prototype.toString.call([]),
    hash: await utils.hash('abc'),
    marker: await storage.get('pwned'),
    tenant: context.tenant.name,
  };
}
"""
GLOBALS = _words(
    "AbortController AbortSignal AggregateError Array ArrayBuffer AsyncDisposableStack Atomics BigInt "
    "BigInt64Array BigUint64Array "
    "Boolean DOMException DataView Date DisposableStack Error EvalError FinalizationRegistry "
    "Float16Array Float32Array Float64Array Function Headers Infinity Int16Array Int32Array Int8Array "
    "InternalError Iterator JSON Map Math NaN Number Object Promise Proxy RangeError ReferenceError "
    "Reflect RegExp Set SharedArrayBuffer String SuppressedError Symbol SyntaxError TypeError URIError "
    "Uint16Array Uint32Array Uint8Array Uint8ClampedArray WeakMap WeakRef WeakSet atob btoa console "
    "context crypto decodeURI decodeURIComponent encodeURI encodeURIComponent escape eval fetch globalThis isFinite "
    "isNaN parseFloat parseInt performance queueMicrotask secrets storage undefined unescape utils"
)


def pristine_result(tenant: str) -> dict:
    return {
        "globals": GLOBALS,
        "objectProto": _words(
            "__defineGetter__ __defineSetter__ __lookupGetter__ __lookupSetter__ __proto__ constructor "
            "hasOwnProperty isPrototypeOf propertyIsEnumerable toLocaleString toString valueOf"
        ),
        "arrayProtoFrozen": True,
        "map": [2, 3],
        "json": '{"a":[1,{"b":2}]}',
        "polluted": True,
        "toStringTag": "[object Array]",
        "hash": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "marker": None,
        "tenant": tenant,
    }


@pytest.fixture
def assert_pristine(run_script):
    """assert_pristine(headers, tenant, worker_name): the next run on that worker sees a fresh world."""

    def check(headers: dict, tenant: str = "acme", worker: str | None = None) -> dict:
        after = run_script(headers, PRISTINE)
        assert after["status"] == "succeeded", after
        assert after["result"] == pristine_result(tenant)
        if worker is not None:
            assert after["worker"] == worker
        return after

    return check


@pytest.fixture
def two_tenants(make_user, make_token) -> tuple[dict[str, str], dict[str, str]]:
    make_user("a@acme.io", "acme", "editor")
    make_user("b@globex.io", "globex", "editor")
    return bearer(make_token("a@acme.io", "acme")), bearer(make_token("b@globex.io", "globex"))
