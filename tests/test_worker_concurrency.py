"""One worker keeps several endpoint calls in flight (WORKER_CONCURRENCY): calls that wait on
the network wait together, each answered with its own result and recorded once; a tenant's
cap counts the workers' slots."""

import threading
import time
from collections.abc import Iterator

import pytest
import requests

from tests.conftest import bearer
from tests.fetch_upstream import Upstream, upstream
from tests.services import SINGLE_TENANT_LOAD, eventually

pytestmark = pytest.mark.slow
CALLS = 24
WAITS = """async function main(req) {
  const answer = await fetch(req.query.to + '/slow?ms=' + req.query.ms + '&n=' + req.query.n);
  console.log('call', req.query.n);
  return {status: 200, body: {n: req.query.n, path: (await answer.json()).path}};
}"""


@pytest.fixture
def server() -> Iterator[Upstream]:
    with upstream("127.0.0.1") as s:
        yield s


@pytest.fixture
def editor(make_user, make_token) -> dict[str, str]:
    make_user("ed@acme.io", "acme", "editor")
    return bearer(make_token("ed@acme.io"))


def _endpoint(client, headers) -> str:
    body = {"name": "waits", "type": "endpoint", "endpoint_method": "GET", "endpoint_path": "/waits", "source": WAITS}
    created = client.post("/api/v1/scripts", json=body, headers=headers)
    assert created.status_code == 201, created.get_json()
    return created.get_json()["id"]


def _call_all(live_server: str, editor: dict, server: Upstream, calls: int) -> dict[int, requests.Response]:
    answers: dict[int, requests.Response] = {}

    def call(n: int) -> None:
        params = {"to": server.origin, "ms": 1000, "n": n}
        answers[n] = requests.get(f"{live_server}/api/scripts/waits", params=params, headers=editor, timeout=60)

    threads = [threading.Thread(target=call, args=(n,)) for n in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers


@pytest.mark.tenants(max_runs=1000, endpoint_rate=0)  # the web side's: any number in flight
def test_calls_waiting_on_the_network_wait_together_on_one_worker(live_server, client, editor, start_worker, server):
    script_id = _endpoint(client, editor)
    start_worker(WORKER_CONCURRENCY="16", FETCH_ALLOWED_NETWORKS="127.0.0.1/32", **SINGLE_TENANT_LOAD)
    answers = _call_all(live_server, editor, server, CALLS)
    assert {n: a.status_code for n, a in answers.items()} == dict.fromkeys(range(CALLS), 200)
    assert all(a.json() == {"n": str(n), "path": f"/slow?ms=1000&n={n}"} for n, a in answers.items())
    assert server.slow_most == 16  # the worker's slots, all waiting at once, and no more

    def recorded() -> list[dict] | None:
        items = client.get(f"/api/v1/scripts/{script_id}/executions?per_page=100", headers=editor).get_json()["items"]
        return items if len(items) >= CALLS else None

    rows = eventually(recorded, 20, "every call recorded")
    assert len(rows) == CALLS and len({r["id"] for r in rows}) == CALLS
    logged = sorted(line["message"] for r in rows for line in r["logs"])
    assert logged == sorted(f"call {n}" for n in range(CALLS))  # each call's log in its own record


def test_a_tenants_default_cap_is_half_the_workers_slots(live_server, client, editor, start_worker, server):
    _endpoint(client, editor)
    start_worker(WORKER_CONCURRENCY="16", FETCH_ALLOWED_NETWORKS="127.0.0.1/32")
    eventually(lambda: client.get("/api/v1/scripts", headers=editor).status_code == 200, 5)
    answers = _call_all(live_server, editor, server, 12)
    assert sorted(a.status_code for a in answers.values()) == [200] * 8 + [429] * 4
    refused = next(a for a in answers.values() if a.status_code == 429)
    assert "already has 8 runs in flight" in refused.json()["error"]["message"]


def test_endpoint_calls_are_taken_while_a_manual_run_waits(live_server, client, editor, start_worker, server):
    """A manual run awaiting a slow upstream holds one of the worker's 16 slots, not the
    thread that takes calls: an endpoint call is answered beside it."""
    _endpoint(client, editor)
    start_worker(WORKER_CONCURRENCY="16", FETCH_ALLOWED_NETWORKS="127.0.0.1/32", **SINGLE_TENANT_LOAD)
    body = {"name": "slow", "type": "manual", "source": "async function main(p) { await fetch(p.url); return 1; }"}
    manual = client.post("/api/v1/scripts", json=body, headers=editor).get_json()["id"]
    params = {"url": f"{server.origin}/slow?ms=8000"}
    queued = client.post(f"/api/v1/scripts/{manual}/run", json={"params": params}, headers=editor)
    assert queued.status_code == 202, queued.get_json()
    eventually(lambda: server.slow_now == 1, 10, "the manual run waiting on the upstream")
    params = {"to": server.origin, "ms": 10, "n": 1}
    answer = requests.get(f"{live_server}/api/scripts/waits", params=params, headers=editor, timeout=30)
    assert answer.status_code == 200, answer.text


RUNS = 50
AWAITS = """async function main(p) {
  const answer = await fetch(p.to + '/slow?ms=1000&n=' + p.n);
  console.log('run', p.n);
  return {n: p.n, path: (await answer.json()).path};
}"""


def test_manual_runs_waiting_on_the_network_wait_together_on_one_worker(client, editor, start_worker, server):
    """Fifty manual runs each awaiting a 1 s upstream, on one worker of 64 slots: they wait
    together, and each is recorded once with its own logs and result."""
    start_worker(WORKER_CONCURRENCY="64", FETCH_ALLOWED_NETWORKS="127.0.0.1/32", **SINGLE_TENANT_LOAD)
    body = {"name": "awaits", "type": "manual", "source": AWAITS}
    script_id = client.post("/api/v1/scripts", json=body, headers=editor).get_json()["id"]
    run = f"/api/v1/scripts/{script_id}/run"
    first = client.post(run, json={"params": {"to": server.origin, "n": -1}, "wait": 20}, headers=editor)
    assert (first.status_code, first.get_json()["status"]) == (200, "succeeded")  # `wait` answers the finished run
    started = time.monotonic()
    queued = {n: client.post(run, json={"params": {"to": server.origin, "n": n}}, headers=editor) for n in range(RUNS)}
    assert {r.status_code for r in queued.values()} == {202}
    ids = {n: r.get_json()["id"] for n, r in queued.items()}

    def finished() -> dict[int, dict] | None:
        runs = {n: client.get(f"/api/v1/executions/{i}", headers=editor).get_json() for n, i in ids.items()}
        return runs if all(r["status"] not in ("queued", "running") for r in runs.values()) else None

    runs = eventually(finished, 40, "all fifty runs finished", step=0.2)
    took = time.monotonic() - started
    print(f"\n{RUNS} manual runs awaiting a 1 s upstream took {took:.1f} s on one worker")
    assert took < 15, f"{RUNS} runs of 1 s each took {took:.1f} s on one worker"
    assert server.slow_most > 20  # they waited together
    for n, execution in runs.items():
        assert (execution["status"], execution["result"]) == ("succeeded", {"n": n, "path": f"/slow?ms=1000&n={n}"})
        assert [line["message"] for line in execution["logs"]] == [f"run {n}"]
    listed = client.get(f"/api/v1/scripts/{script_id}/executions?per_page=100", headers=editor).get_json()["items"]
    assert sorted(r["id"] for r in listed) == sorted([*ids.values(), first.get_json()["id"]])  # each recorded once
