"""A worker recording a manual run while PostgreSQL is down keeps serving endpoint calls: the
run's record waits (retried for ~30 s) in the run's own thread, and the worker's other slots
go on answering calls, whose records wait in the worker too (issue 17, item 6)."""

import time

import pytest
import requests

from tests.conftest import bearer
from tests.services import PostgresProcess, eventually

PONG = "function main() { return { body: 'pong' } }"
# Computes for a second: PostgreSQL is stopped while it does, so its end is recorded while down.
SLOW = "function main() { const t = Date.now() + 1000; while (Date.now() < t) {} return 'done'; }"
DOWN_SECONDS = 6


@pytest.fixture
def database_url(postgres: PostgresProcess) -> str:
    return postgres.url


def test_endpoint_calls_are_answered_while_a_manual_runs_record_waits_for_the_database(
    client, make_user, make_token, postgres, start_web, start_worker
):
    make_user("ed@acme.io", "acme", "editor")
    headers = bearer(make_token("ed@acme.io"))
    for fields in (
        {"name": "ping", "type": "endpoint", "endpoint_method": "GET", "endpoint_path": "/ping", "source": PONG},
        {"name": "slow", "type": "manual", "source": SLOW},
    ):
        created = client.post("/api/v1/scripts", json=fields, headers=headers)
        assert created.status_code == 201, created.get_json()
    slow = created.get_json()
    web = start_web()
    start_worker(WORKER_CONCURRENCY="4")  # one worker: the calls must be served by the one recording
    ping = f"{web.url}/api/scripts/ping"
    eventually(lambda: requests.get(ping, headers=headers, timeout=10).text == "pong", 20, "the endpoint warm")
    for _ in range(30):  # each web process knows the caller (it keeps serving it without the database)
        assert requests.get(ping, headers=headers, timeout=10).text == "pong"
    run = requests.post(f"{web.url}/api/v1/scripts/{slow['id']}/run", json={}, headers=headers, timeout=10).json()

    def running() -> bool:
        execution = requests.get(f"{web.url}/api/v1/executions/{run['id']}", headers=headers, timeout=10).json()
        return execution["status"] == "running"

    eventually(running, 10, "the run claimed by the worker")  # it ends, to be recorded, once the database is down
    postgres.stop()
    try:
        answered = []
        until = time.monotonic() + DOWN_SECONDS
        while time.monotonic() < until:
            sent = time.monotonic()
            answer = requests.get(ping, headers=headers, timeout=30)
            answered.append((answer.status_code, answer.text, round(time.monotonic() - sent, 2)))
    finally:
        postgres.start()
    assert len(answered) >= 10 and {(s, t) for s, t, _ in answered} == {(200, "pong")}, answered
    assert max(took for _, _, took in answered) < 2.0, answered  # never behind the waiting record

    def recorded() -> dict | None:
        execution = requests.get(f"{web.url}/api/v1/executions/{run['id']}", headers=headers, timeout=10).json()
        return execution if execution["status"] == "succeeded" else None

    assert eventually(recorded, 40, "the run recorded once the database is back")["result"] == "done"
