"""A worker killed with SIGKILL in the middle of a run."""

import threading
import time

import requests
from redis import Redis

from tests.conftest import bearer
from tests.fetch_upstream import upstream
from tests.load import children
from tests.services import SINGLE_TENANT_LOAD, eventually
from webapp.metrics import BUSY

SLOW = "function main() { const end = Date.now() + 3000; while (Date.now() < end) {} return { body: 'done' } }"


def _busy_worker(redis_url: str, workers: list) -> object:
    redis = Redis.from_url(redis_url)
    names = eventually(lambda: [k.decode()[len(BUSY) :] for k in redis.keys(BUSY + "*")], 10, "a busy worker")
    return next(w for w in workers if w.name == names[0])


def test_an_endpoint_call_whose_worker_dies_is_answered_and_recorded_lost(
    live_server, client, make_user, make_token, settings, start_worker
):
    make_user("ed@acme.io", "acme", "editor")
    headers = bearer(make_token("ed@acme.io"))
    script = client.post(
        "/api/v1/scripts",
        json={
            "name": "slow",
            "type": "endpoint",
            "endpoint_method": "GET",
            "endpoint_path": "/slow",
            "source": SLOW,
            "limits": {"wall_seconds": 5},
        },
        headers=headers,
    ).get_json()
    workers = [start_worker(), start_worker()]
    answer: dict = {}

    def call() -> None:
        sent = time.monotonic()
        response = requests.get(f"{live_server}/api/scripts/slow", headers=headers, timeout=60)
        answer.update(status=response.status_code, body=response.json(), took=time.monotonic() - sent)
        answer.update(retry_after=response.headers.get("Retry-After"))

    caller = threading.Thread(target=call)
    caller.start()
    victim = _busy_worker(settings.redis_url, workers)
    sandboxes = children(victim.proc.pid)
    assert sandboxes  # its sandbox process, started by the thread of its first run
    victim.kill()
    killed_at = time.monotonic()
    caller.join(timeout=30)
    assert answer["status"] == 503 and answer["body"]["error"]["code"] == "unavailable"
    assert answer["retry_after"] == "5" and "stopped without answering" in answer["body"]["error"]["message"]
    # No hang: the wait for a worker (5 s), then the wall-time limit (5 s) and the margin (2 s).
    assert answer["took"] < 5 + 5 + 2 + 3
    execution_id = answer["body"]["error"]["execution_id"]
    execution = client.get(f"/api/v1/executions/{execution_id}", headers=headers).get_json()
    assert (execution["status"], execution["error_kind"]) == ("failed", "lost")
    print(f"\nendpoint call answered 503 {time.monotonic() - killed_at:.1f} s after its worker was killed")
    # The killed worker's sandbox went with it; the other worker serves the next calls.
    eventually(lambda: not any(__import__("os").path.exists(f"/proc/{pid}") for pid in sandboxes), 5, "sandbox gone")
    fast = client.patch(
        f"/api/v1/scripts/{script['id']}", json={"source": "function main() { return { body: 'ok' } }"}, headers=headers
    )
    assert fast.status_code == 200
    for _ in range(5):
        assert requests.get(f"{live_server}/api/scripts/slow", headers=headers, timeout=30).text == "ok"


def test_a_manual_run_whose_worker_dies_becomes_lost_within_a_minute(
    client, make_user, make_token, settings, start_worker
):
    make_user("ed@acme.io", "acme", "editor")
    headers = bearer(make_token("ed@acme.io"))
    script = client.post(
        "/api/v1/scripts", json={"name": "slow", "type": "manual", "source": SLOW}, headers=headers
    ).get_json()
    workers = [start_worker(), start_worker()]
    run = client.post(f"/api/v1/scripts/{script['id']}/run", json={}, headers=headers).get_json()
    victim = _busy_worker(settings.redis_url, workers)
    victim.kill()
    killed_at = time.monotonic()

    def lost() -> bool:
        execution = client.get(f"/api/v1/executions/{run['id']}", headers=headers).get_json()
        return execution["status"] == "failed" and execution["error_kind"] == "lost"

    eventually(lost, 60, "the run marked lost")
    print(f"\nmanual run marked lost {time.monotonic() - killed_at:.1f} s after its worker was killed")
    again = client.post(f"/api/v1/scripts/{script['id']}/run", json={"wait": 20}, headers=headers).get_json()
    assert again["status"] == "succeeded"


def test_thirty_runs_in_flight_on_a_worker_that_dies_all_become_lost(
    client, make_user, make_token, settings, start_worker
):
    """A worker keeps runs of any kind in flight: killed with thirty of them waiting on the
    network, every one ends `lost`, none stays `running`."""
    make_user("ed@acme.io", "acme", "editor")
    headers = bearer(make_token("ed@acme.io"))
    source = "async function main(p) { await fetch(p.url); return 1; }"
    script = client.post("/api/v1/scripts", json={"name": "waits", "type": "manual", "source": source}, headers=headers)
    run = f"/api/v1/scripts/{script.get_json()['id']}/run"
    with upstream("127.0.0.1") as server:
        victim = start_worker(WORKER_CONCURRENCY="32", FETCH_ALLOWED_NETWORKS="127.0.0.1/32", **SINGLE_TENANT_LOAD)
        params = {"url": f"{server.origin}/slow?ms=25000"}
        ids = [client.post(run, json={"params": params}, headers=headers).get_json()["id"] for _ in range(30)]
        eventually(lambda: server.slow_now == 30, 20, "thirty runs waiting on the upstream")
        victim.kill()
        killed_at = time.monotonic()
        start_worker(FETCH_ALLOWED_NETWORKS="127.0.0.1/32")  # its upkeep reaps what the dead worker left

        def statuses() -> list[tuple[str, str | None]]:
            runs = [client.get(f"/api/v1/executions/{i}", headers=headers).get_json() for i in ids]
            return [(r["status"], r["error_kind"]) for r in runs]

        eventually(lambda: set(statuses()) == {("failed", "lost")}, 60, "all thirty runs marked lost", step=0.5)
        print(f"\n30 runs in flight marked lost {time.monotonic() - killed_at:.1f} s after their worker was killed")
        quick = {"url": f"{server.origin}/slow?ms=10"}
        again = client.post(run, json={"params": quick, "wait": 20}, headers=headers).get_json()
        assert again["status"] == "succeeded"  # the other worker serves the next run
