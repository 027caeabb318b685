"""One tenant cannot starve another: a cap on each tenant's runs in flight across the workers,
and a rate limit on its endpoint calls (docs/architecture.md, "Fairness"). Real workers,
scheduler and Redis; tenant acme floods, tenant globex must keep its latency."""

import itertools
import threading
import time
from datetime import datetime

import pytest
import requests
from redis import Redis

from tests.conftest import bearer
from tests.services import eventually

BUSY = (
    "function main() { const t = Date.now() + 2500; while (Date.now() < t) {} return { status: 200, body: 'done' }; }"
)
QUICK = "function main() { return { status: 200, body: context.tenant.name }; }"


@pytest.fixture
def acme_and_globex(make_user, make_token) -> tuple[dict[str, str], dict[str, str]]:
    make_user("a@acme.io", "acme", "editor")
    make_user("b@globex.io", "globex", "editor")
    return bearer(make_token("a@acme.io", "acme")), bearer(make_token("b@globex.io", "globex"))


def _script(client, headers, **fields) -> dict:
    response = client.post("/api/v1/scripts", json=fields, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def _endpoint(client, headers, path: str, source: str) -> dict:
    return _script(
        client, headers, name=path, type="endpoint", endpoint_method="GET", endpoint_path=path, source=source
    )


def test_a_flooding_tenant_gets_429_and_the_other_keeps_its_latency(live_server, client, acme_and_globex, start_worker):
    acme, globex = acme_and_globex
    _endpoint(client, acme, "/busy", BUSY)
    _endpoint(client, globex, "/quick", QUICK)
    start_worker(WORKER_CONCURRENCY="1"), start_worker(WORKER_CONCURRENCY="1")  # two slots: one per tenant
    eventually(lambda: requests.get(f"{live_server}/api/scripts/quick", headers=globex, timeout=10).ok, 10)
    flood: list[requests.Response] = []

    def call_busy() -> None:
        flood.append(requests.get(f"{live_server}/api/scripts/busy", headers=acme, timeout=30))

    threads = [threading.Thread(target=call_busy) for _ in range(4)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)
    latencies = []
    while any(thread.is_alive() for thread in threads):
        started = time.monotonic()
        answer = requests.get(f"{live_server}/api/scripts/quick", headers=globex, timeout=30)
        latencies.append(time.monotonic() - started)
        assert (answer.status_code, answer.text) == (200, "globex")
    for thread in threads:
        thread.join()
    statuses = sorted(r.status_code for r in flood)
    assert statuses == [200, 429, 429, 429]
    refused = next(r for r in flood if r.status_code == 429)
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["error"] == {
        "code": "too_many_requests",
        "message": "this tenant already has 1 run in flight, as many as it may; try again in a moment",
        "execution_id": None,
    }
    assert len(latencies) >= 5 and max(latencies) < 2.0, latencies  # never behind acme's 2.5 s loops


def test_with_runs_in_flight_a_flooding_tenant_does_not_slow_the_other(
    live_server, client, acme_and_globex, start_worker
):
    """The test above, with the default WORKER_CONCURRENCY (32): acme's cap is 32 of the two
    workers' 64 slots, and its 8 busy calls are all in flight. In one sandbox process per
    worker globex's calls would wait behind every busy loop there (4 x 2.5 s); each worker's
    lanes keep acme's loops in acme's process, away from globex's."""
    acme, globex = acme_and_globex
    _endpoint(client, acme, "/busy", BUSY)
    _endpoint(client, globex, "/quick", QUICK)
    start_worker(), start_worker()
    eventually(lambda: requests.get(f"{live_server}/api/scripts/quick", headers=globex, timeout=10).ok, 10)
    flood: list[requests.Response] = []
    threads = [
        threading.Thread(
            target=lambda: flood.append(requests.get(f"{live_server}/api/scripts/busy", headers=acme, timeout=60))
        )
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    latencies = []
    while any(thread.is_alive() for thread in threads):
        started = time.monotonic()
        answer = requests.get(f"{live_server}/api/scripts/quick", headers=globex, timeout=60)
        latencies.append(time.monotonic() - started)
        assert (answer.status_code, answer.text) == (200, "globex")
    for thread in threads:
        thread.join()
    assert sorted(r.status_code for r in flood) == [200] * 8  # all within acme's cap
    assert max(latencies) < 2.0, latencies  # never behind one of acme's 2.5 s loops (a loaded host: ~1.5 s)


@pytest.mark.tenants(max_runs=1)
def test_manual_runs_over_the_cap_wait_their_turn_and_all_run(client, acme_and_globex, start_worker):
    acme, globex = acme_and_globex
    start_worker(TENANT_MAX_RUNS="1"), start_worker(TENANT_MAX_RUNS="1")
    slow = _script(
        client,
        acme,
        name="slow",
        type="manual",
        source="function main() { const t = Date.now() + 700; while (Date.now() < t) {} return 1 }",
    )
    quick = _script(client, globex, name="quick", type="manual", source="function main() { return 2 }")
    queued = [client.post(f"/api/v1/scripts/{slow['id']}/run", json={}, headers=acme).get_json() for _ in range(3)]
    other = client.post(f"/api/v1/scripts/{quick['id']}/run", json={"wait": 5}, headers=globex).get_json()
    assert other["status"] == "succeeded"  # not behind acme's three

    def finished() -> list[dict] | None:
        runs = [client.get(f"/api/v1/executions/{r['id']}", headers=acme).get_json() for r in queued]
        return runs if all(r["status"] == "succeeded" for r in runs) else None

    runs = sorted(eventually(finished, 15, "acme's three runs"), key=lambda r: r["started_at"])
    for before, after in itertools.pairwise(runs):  # one at a time: never two in flight
        assert datetime.fromisoformat(before["finished_at"]) <= datetime.fromisoformat(after["started_at"])
    assert datetime.fromisoformat(other["finished_at"]) < datetime.fromisoformat(runs[1]["started_at"])


@pytest.mark.tenants(endpoint_rate=5)
def test_the_endpoint_rate_limit_is_per_tenant(live_server, client, acme_and_globex, start_worker, redis_url):
    acme, globex = acme_and_globex
    _endpoint(client, acme, "/quick", QUICK)
    _endpoint(client, globex, "/quick", QUICK)
    start_worker()
    # The window slides by weighing the last minute's calls: calls that straddle the turn of a
    # minute are counted a fraction less (docs/architecture.md, "Fairness"). Start well inside one.
    redis = Redis.from_url(redis_url)
    eventually(lambda: redis.time()[0] % 60 < 40, 25, "a minute with 20 s left")
    answers = [requests.get(f"{live_server}/api/scripts/quick", headers=acme, timeout=10) for _ in range(7)]
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 2
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "too_many_requests"
    assert "over 5 a minute" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    other = requests.get(f"{live_server}/api/scripts/quick", headers=globex, timeout=10)
    assert (other.status_code, other.text) == (200, "globex")


CRON_HOG = "function main() { const until = Date.now() + 3000; while (Date.now() < until) {} return 1 }"


def test_a_tenants_busy_crons_do_not_delay_anothers(client, acme_and_globex, start_worker, start_scheduler):
    acme, globex = acme_and_globex
    every_second = {"type": "cron", "cron_expression": "* * * * * *"}
    for n in range(12):
        _script(client, acme, name=f"hog-{n}", source=CRON_HOG, **every_second)
    mine = _script(client, globex, name="tick", source="function main() { return 1 }", **every_second)
    start_worker(), start_worker()
    start_scheduler()

    def ticks() -> list[dict] | None:
        page = client.get(f"/api/v1/scripts/{mine['id']}/executions?per_page=50", headers=globex).get_json()
        done = [e for e in page["items"] if e["status"] == "succeeded"]
        return done if len(done) >= 6 else None

    done = eventually(ticks, 20, "six of globex's fires")
    lateness = [
        (datetime.fromisoformat(e["started_at"]) - datetime.fromisoformat(e["scheduled_at"])).total_seconds()
        for e in done
    ]
    assert max(lateness) < 1.5, lateness  # acme's twelve 3-second hogs hold one worker at most
