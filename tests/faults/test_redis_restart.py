"""Redis restarted (empty) under endpoint load, with cron scripts firing every second."""

import itertools
import threading
import time
import uuid
from datetime import timedelta

import requests

from tests.conftest import bearer
from tests.services import SINGLE_TENANT_LOAD, eventually
from webapp.extensions import db
from webapp.models import Execution, utcnow

DOWN_SECONDS = 4


def test_calls_fail_fast_while_redis_is_down_and_everything_recovers_by_itself(
    app, client, settings, make_user, make_token, redis_process, start_web, start_worker, start_scheduler
):
    make_user("ed@acme.io", "acme", "editor")
    headers = bearer(make_token("ed@acme.io"))
    client.post(
        "/api/v1/scripts",
        json={
            "name": "ping",
            "type": "endpoint",
            "endpoint_method": "GET",
            "endpoint_path": "/ping",
            "source": "function main() { return { body: 'pong' } }",
        },
        headers=headers,
    )
    cron = client.post(
        "/api/v1/scripts",
        json={"name": "tick", "type": "cron", "cron_expression": "* * * * * *", "source": "function main() {}"},
        headers=headers,
    ).get_json()
    web = start_web(**SINGLE_TENANT_LOAD)
    workers = [start_worker(), start_worker()]
    scheduler = start_scheduler()
    calls: list[tuple[float, float, int]] = []  # (sent, took, status: 0 for no answer)
    stop = threading.Event()

    def call_repeatedly() -> None:
        session = requests.Session()
        while not stop.is_set():
            sent = time.monotonic()
            try:
                status = session.get(f"{web.url}/api/scripts/ping", headers=headers, timeout=30).status_code
            except requests.RequestException:
                status = 0
            calls.append((sent, time.monotonic() - sent, status))

    callers = [threading.Thread(target=call_repeatedly) for _ in range(4)]
    try:
        for caller in callers:
            caller.start()
        eventually(lambda: sum(1 for c in calls if c[2] == 200) >= 50, 20, "calls served before the outage")
        redis_process.stop()
        down_at, down_wall = time.monotonic(), utcnow()
        time.sleep(DOWN_SECONDS)
        redis_process.start()
        up_at, up_wall = time.monotonic(), utcnow()
        eventually(lambda: any(sent > up_at and status == 200 for sent, _, status in calls), 20, "calls served again")
        recovered_after = min(sent + took for sent, took, status in calls if sent > up_at and status == 200) - up_at
        time.sleep(3)  # calls and fires keep going after the recovery
    finally:
        stop.set()
        for caller in callers:
            caller.join(timeout=40)
    try:
        # While Redis was down, calls failed fast with 503 (no hang, no other error).
        during = [(took, status) for sent, took, status in calls if down_at + 0.5 < sent < up_at - 0.5]
        assert during and {status for _, status in during} == {503}, sorted(set(during))[:10]
        assert max(took for took, _ in during) < 3
        print(  # the figures of docs/reliability.md (pytest -s shows them)
            f"\nRedis down {DOWN_SECONDS} s: {len(during)} calls answered 503 in at most "
            f"{max(took for took, _ in during) * 1000:.0f} ms; calls served again {recovered_after:.2f} s after "
            f"it came back; {sum(1 for c in calls if c[2] == 200)} calls served in all"
        )
        assert recovered_after < 10, f"calls served again {recovered_after:.1f} s after Redis came back"
        # No process needed a restart.
        assert web.proc.poll() is None and scheduler.proc.poll() is None
        assert all(worker.proc.poll() is None for worker in workers)
        # Both workers serve (and are registered again: Redis forgot them).
        from redis import Redis
        from rq import Worker

        eventually(lambda: len(Worker.all(connection=Redis.from_url(settings.redis_url))) == 2, 15, "workers listed")
        # Cron: fires go on; none doubled; the outage's missed fires collapse into at most one.
        with app.app_context():
            fires = sorted(
                db.session.scalars(
                    db.select(Execution.scheduled_at).where(Execution.script_id == uuid.UUID(cron["id"]))
                )
            )
        assert len(fires) == len(set(fires))
        # Fires that fell due while Redis was down were missed: not replayed one by one.
        missed = [at for at in fires if down_wall + timedelta(seconds=1) < at < up_wall - timedelta(seconds=1)]
        assert len(missed) <= 1, missed
        print(f"cron: {len(fires)} fires, none doubled, {len(missed)} fire(s) of the outage caught up")
        assert max(b - a for a, b in itertools.pairwise(fires)) >= timedelta(seconds=DOWN_SECONDS - 2)
        after = [at for at in fires if at > up_wall]
        assert len(after) >= 3 and all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(after[-3:]))
    finally:
        web.stop()
