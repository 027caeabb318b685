"""Worker processes: several at once, priorities, and runs lost with a killed worker."""

import subprocess
import sys
import time

import pytest
from redis import Redis
from rq import Queue

from webapp.extensions import db
from webapp.models import Execution


def _create(client, headers, source: str, name: str) -> str:
    body = {"name": name, "type": "manual", "source": source}
    return client.post("/api/v1/scripts", json=body, headers=headers).get_json()["id"]


def _run(client, headers, script_id: str, wait: int = 0) -> dict:
    return client.post(f"/api/v1/scripts/{script_id}/run", json={"wait": wait}, headers=headers).get_json()


def _wait_for_status(client, headers, execution_id: str, statuses: set[str], timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        execution = client.get(f"/api/v1/executions/{execution_id}", headers=headers).get_json()
        if execution["status"] in statuses or time.monotonic() > deadline:
            return execution
        time.sleep(0.2)


def test_two_workers_share_the_queue(client, editor, start_worker):
    first, second = start_worker(), start_worker()
    slow = _create(
        client, editor, "function main() { const t = Date.now(); while (Date.now() - t < 300) {} return 1 }", "slow"
    )
    started = [_run(client, editor, slow) for _ in range(6)]
    finished = [_wait_for_status(client, editor, e["id"], {"succeeded", "failed"}, 30) for e in started]
    assert all(e["status"] == "succeeded" for e in finished), finished
    assert {e["worker"] for e in finished} == {first.name, second.name}


def test_endpoint_runs_are_served_before_the_default_queue(app, client, editor, start_worker, settings):
    """A backlog on `default` does not delay a run on `endpoints`."""
    script_id = _create(client, editor, "function main() { return 1 }", "quick")
    backlog = [_run(client, editor, script_id) for _ in range(5)]
    from webapp.executions import service
    from webapp.models import Script

    with app.test_request_context():
        script = db.session.get(Script, __import__("uuid").UUID(script_id))
        urgent = service.start_run(script, "endpoint", {})
        urgent_id = str(urgent.id)
    assert Queue("endpoints", connection=Redis.from_url(settings.redis_url)).count == 1
    start_worker()
    done = _wait_for_status(client, editor, backlog[-1]["id"], {"succeeded"}, 30)
    assert done["status"] == "succeeded"
    with app.app_context():
        rows = {str(e.id): e for e in db.session.scalars(db.select(Execution))}
    urgent_started = rows[urgent_id].started_at
    assert all(urgent_started <= rows[e["id"]].started_at for e in backlog)


def test_a_killed_workers_run_becomes_lost_and_the_next_runs_succeed(client, editor, start_worker):
    victim = start_worker()
    hang = _create(client, editor, "function main() { while (true) {} }", "hang")
    execution = _run(client, editor, hang)
    running = _wait_for_status(client, editor, execution["id"], {"running"}, 15)
    assert running["status"] == "running" and running["worker"] == victim.name
    victim.kill()
    survivor = start_worker()
    started = time.monotonic()
    lost = _wait_for_status(client, editor, execution["id"], {"failed"}, 60)
    assert lost["status"] == "failed" and lost["error_kind"] == "lost", lost
    assert lost["error_message"] == f"the worker {victim.name} stopped during the run"
    assert time.monotonic() - started < 60
    ok = _create(client, editor, "function main() { return 'fine' }", "fine")
    after = _run(client, editor, ok, wait=20)
    assert after["status"] == "succeeded" and after["worker"] == survivor.name


@pytest.mark.slow  # starts `rq worker-pool` processes
def test_rq_worker_pool_runs_our_worker_class(client, editor, settings):
    """`rq worker-pool -w worker.main.ScriptWorker` works as documented."""
    import os

    env = {**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}
    pool = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rq.cli",
            "worker-pool",
            "-n",
            "2",
            "-w",
            "worker.main.ScriptWorker",
            "-u",
            settings.redis_url,
            "endpoints",
            "default",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        script_id = _create(client, editor, "function main(e) { return context.execution.trigger }", "pooled")
        result = _run(client, editor, script_id, wait=30)
        assert result["status"] == "succeeded" and result["result"] == "api"
    finally:
        pool.terminate()
        pool.wait(timeout=20)
