"""Background upkeep of executions: runs lost with their worker, and retention.

Called periodically by every worker (under a Redis lock, so one does the work at a time).
"""

import logging
from datetime import timedelta

from flask import current_app
from redis import Redis
from rq.job import Job
from sqlalchemy import delete, func, select, update

from webapp.extensions import db
from webapp.fairness import tenant_slots
from webapp.models import Execution, utcnow

log = logging.getLogger(__name__)
ALIVE_KEY = "sr:worker-alive:{}"
ALIVE_TTL_SECONDS = 20
QUEUED_GRACE = timedelta(seconds=60)


def mark_alive(redis: Redis, worker_name: str) -> None:
    redis.set(ALIVE_KEY.format(worker_name), "1", ex=ALIVE_TTL_SECONDS)


def reap_lost(redis: Redis) -> int:
    """Fail runs whose worker stopped heartbeating, and queued runs whose job vanished."""
    now = utcnow()
    reaped = 0
    running = db.session.execute(
        select(Execution.id, Execution.tenant_id, Execution.worker, Execution.started_at).where(
            Execution.status == "running", Execution.started_at < now - timedelta(seconds=2)
        )
    ).all()
    # No run may take longer than the wall-time limit: one still `running` well past it is
    # stuck (its worker is alive but lost track of it), whatever its worker says.
    stuck_before = now - timedelta(seconds=current_app.config["SETTINGS"].limits.overdue_after)
    for execution_id, tenant_id, worker, started_at in running:
        if started_at < stuck_before:
            message = "the run did not finish within its wall-time limit (stuck)"
        elif worker and redis.exists(ALIVE_KEY.format(worker)):
            continue
        else:
            message = f"the worker {worker or '?'} stopped during the run"
        if _fail(execution_id, "running", message):
            reaped += 1
            # Its worker will not give the tenant's slot back: the next parked run takes it now.
            tenant_slots(redis).release(tenant_id, str(execution_id))
    queued = list(
        db.session.scalars(
            select(Execution.id).where(Execution.status == "queued", Execution.queued_at < now - QUEUED_GRACE)
        )
    )
    for execution_id, (status, worker) in zip(queued, _job_statuses(redis, queued), strict=True):
        if status is None:
            reaped += _fail(execution_id, "queued", "the queued run was lost: its job is no longer in Redis")
        elif status == "started" and worker and not redis.exists(ALIVE_KEY.format(worker)):
            # Taken by a worker that died before it could record the run running (the
            # database was slow or away): no one else will take it.
            reaped += _fail(execution_id, "queued", f"the worker {worker} stopped before the run started")
        elif status not in (
            "created",
            "queued",
            "started",
            "deferred",
            "scheduled",
            "rate_limited",
            "ready_to_enqueue",
        ):
            # The job ended without the run being recorded (the worker could not reach the database).
            reaped += _fail(execution_id, "queued", f"the run could not start: its job ended ({status})")
    if reaped:
        log.warning("marked %d execution(s) lost", reaped)
    return reaped


def _job_statuses(redis: Redis, execution_ids: list) -> list[tuple[str | None, str | None]]:
    """The status of each run's RQ job (None: no such job) and the worker that took it, in one
    round trip: a backlog of queued runs (workers down or far behind) costs the reaper one read
    each, not a fetch each."""
    pipe = redis.pipeline(transaction=False)
    for execution_id in execution_ids:
        pipe.hmget(Job.key_for(str(execution_id)), "status", "worker_name")
    return [tuple(v.decode() if v is not None else None for v in fields) for fields in pipe.execute()]


def _fail(execution_id: object, expected: str, message: str) -> int:
    result = db.session.execute(
        update(Execution)
        .where(Execution.id == execution_id, Execution.status == expected)
        .values(status="failed", error_kind="lost", error_message=message, finished_at=utcnow())
    )
    db.session.commit()
    return result.rowcount or 0


def prune_executions() -> int:
    """Keep the newest N executions per script and none older than the retention period."""
    settings = current_app.config["SETTINGS"]
    removed = (
        db.session.execute(
            delete(Execution).where(Execution.queued_at < utcnow() - timedelta(days=settings.retention_days))
        ).rowcount
        or 0
    )
    crowded = db.session.execute(
        select(Execution.script_id).group_by(Execution.script_id).having(func.count() > settings.retention_count)
    ).scalars()
    for script_id in list(crowded):
        cutoff = db.session.scalar(
            select(Execution.queued_at)
            .where(Execution.script_id == script_id)
            .order_by(Execution.queued_at.desc())
            .offset(settings.retention_count - 1)
            .limit(1)
        )
        removed += (
            db.session.execute(
                delete(Execution).where(Execution.script_id == script_id, Execution.queued_at < cutoff)
            ).rowcount
            or 0
        )
    db.session.commit()
    return removed
