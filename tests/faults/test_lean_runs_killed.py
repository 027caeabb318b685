"""What a SIGKILLed worker leaves behind on the lean run path (worker/runs.py): a run it took
but had not yet recorded running, and a draft it was running. Both end `lost`; neither stays
queued or running forever."""

import sqlite3
import uuid
from datetime import timedelta

from redis import Redis
from rq import Queue
from rq.job import Job
from sqlalchemy import update

from tests.conftest import bearer
from tests.services import eventually
from webapp.executions import drafts
from webapp.executions.maintenance import ALIVE_KEY, reap_lost
from webapp.extensions import db
from webapp.models import Execution, Tenant, User, utcnow

SLOW = "function main() { const end = Date.now() + 3000; while (Date.now() < end) {} return 'done' }"


def test_a_run_taken_but_not_yet_claimed_when_its_worker_dies_is_reaped_lost(
    app, client, make_user, make_token, settings, start_worker
):
    make_user("ed@acme.io", "acme", "editor")
    headers = bearer(make_token("ed@acme.io"))
    script = client.post(
        "/api/v1/scripts",
        json={"name": "s", "type": "manual", "source": "function main() { return 1 }"},
        headers=headers,
    ).get_json()
    run_url = f"/api/v1/scripts/{script['id']}/run"
    warm = start_worker()
    assert client.post(run_url, json={"wait": 20}, headers=headers).get_json()["status"] == "succeeded"
    warm.stop()
    run = client.post(run_url, json={}, headers=headers).get_json()
    redis = Redis.from_url(settings.redis_url)
    queue = Queue("default", connection=redis)
    assert queue.count == 1
    # The database is busy (a long write elsewhere, or a restart): the worker's claim waits.
    lock = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"), isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    victim = start_worker()
    eventually(lambda: Job.fetch(run["id"], connection=redis).get_status() == "started", 10, "the run taken")
    victim.kill()  # its thread waits in _claim for the lock
    lock.execute("ROLLBACK")
    lock.close()
    redis.delete(ALIVE_KEY.format(victim.name))  # as if its liveness had lapsed (20 s)
    with app.app_context():
        aged = utcnow() - timedelta(minutes=5)  # as if the reaper came by a few minutes later
        db.session.execute(update(Execution).where(Execution.id == uuid.UUID(run["id"])).values(queued_at=aged))
        db.session.commit()
        reap_lost(redis)
    execution = client.get(f"/api/v1/executions/{run['id']}", headers=headers).get_json()
    assert (execution["status"], execution["error_kind"]) == ("failed", "lost"), execution
    assert execution["error_message"] == f"the worker {victim.name} stopped before the run started"


def test_a_draft_whose_worker_dies_ends_lost_not_running_forever(app, make_user, settings, start_worker):
    make_user("ed@acme.io", "acme", "editor")
    victim = start_worker()
    with app.test_request_context():
        tenant = db.session.scalar(db.select(Tenant).where(Tenant.name == "acme"))
        user = db.session.scalar(db.select(User).where(User.email == "ed@acme.io"))
        job_id = drafts.start_ephemeral(tenant, user, {"name": "d", "type": "manual", "source": SLOW}, {}, None)
        eventually(lambda: drafts.ephemeral_outcome(job_id, tenant, 0).status == "running", 15, "the draft running")
        victim.kill()
        Redis.from_url(settings.redis_url).delete(ALIVE_KEY.format(victim.name))  # as if 20 s had passed
        outcome = drafts.ephemeral_outcome(job_id, tenant, 0)
    assert (outcome.status, outcome.error_kind) == ("failed", "lost")
    assert outcome.error_message == f"the worker {victim.name} stopped while it ran the draft"
