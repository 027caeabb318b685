"""An endpoint call's trip through RQ: queued by the web process, answered by a worker.

The call is hot, so its path is lean (issue 5): the request travels inside the RQ job on the
`endpoints` queue; the worker runs it, pushes the answer onto a reply list the caller is
blocked on, and only then records the execution. The web process writes to the database only
when the call went wrong on its side (no worker took it, or no answer came in time).

Until an execution row exists, the call is listed in the INFLIGHT hash (written in the same
round trip as the job). Whoever records the row removes the entry; the reaper records any
entry left behind by a worker and a web process that both died as `lost`, so no call goes
unrecorded.
"""

import contextlib
import json
import math
import uuid
from datetime import datetime
from typing import Any

from flask import current_app
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.job import Job
from rq.utils import now as rq_now
from sqlalchemy.exc import IntegrityError

from webapp.auth.identity import Caller
from webapp.endpoints.router import ServedScript
from webapp.executions.service import ENDPOINT_QUEUE, QueueUnavailable, insert_ignoring_duplicates, run_context
from webapp.extensions import db
from webapp.fairness import Refusal, tenant_slots
from webapp.limits import ANSWER_MARGIN_SECONDS, QUEUE_WAIT_SECONDS, effective_limits
from webapp.models import Execution, utcnow
from webapp.redis_client import get_blocking_redis, get_redis

JOB_FUNCTION = "worker.jobs.run_endpoint_call"
REPLY = "sr:endpoint:reply:"  # + call id: a list holding the worker's answer
REPLY_TTL_SECONDS = 60
INFLIGHT = "sr:endpoint:inflight"  # hash call id -> call (JSON), until its row is recorded


class TenantBusy(Exception):
    """The caller's tenant is at its cap of runs in flight or over its rate of calls."""

    def __init__(self, refusal: Refusal, message: str):
        super().__init__(message)
        self.refusal = refusal


def start_call(script: ServedScript, event: dict[str, Any], caller: Caller) -> dict[str, Any]:
    """Admit the call for its tenant and queue it; returns it (the job's first argument, the
    event being the second). Raises TenantBusy or QueueUnavailable."""
    call_id = str(uuid.uuid4())
    call = {
        "id": call_id,
        "tenant_id": script.tenant_id,
        "script_id": str(script.id),
        "script_version": script.version,
        "user_id": caller.user.id,
        "queued_at": utcnow().isoformat(),
        "summary": {"method": event["method"], "path": event["path"], "request_bytes": len(event["body"].encode())},
        # The caller and script are known here already: the worker needs no query for them.
        "context": run_context(call_id, "endpoint", script, caller.tenant, caller.user, "endpoint"),
    }
    settings = current_app.config["SETTINGS"]
    limits, tenants = settings.limits, settings.tenants
    redis = get_redis()
    try:
        refusal = tenant_slots(redis).admit_call(
            script.tenant_id, call_id, limits.call_hold, tenants.max_runs, tenants.endpoint_rate
        )
    except RedisError as exc:
        raise QueueUnavailable(f"the call could not be queued: Redis is unavailable ({type(exc).__name__})") from exc
    if refusal is not None:
        raise TenantBusy(refusal, refusal.message(tenants.endpoint_rate))
    queue = Queue(ENDPOINT_QUEUE, connection=redis)
    job = queue.create_job(
        JOB_FUNCTION,
        args=(call, event),
        job_id=call_id,
        description=f"endpoint call {call_id}",  # RQ logs this: never the arguments
        timeout=limits.job_timeout,
        ttl=limits.overdue_after,  # the request leaves Redis even if no one ran it
        result_ttl=0,  # the answer goes to the reply list, not to RQ's result stream
        failure_ttl=300,
    )
    job.enqueued_at = rq_now()
    try:
        # What Queue.enqueue writes (the job's hash, then its id on the queue) in one round
        # trip without MULTI: the hash is written before the id that leads a worker to it.
        pipe = redis.pipeline(transaction=False)
        pipe.hset(INFLIGHT, call_id, json.dumps({k: v for k, v in call.items() if k != "context"}))
        pipe.hset(job.key, mapping=job.to_dict())
        pipe.expire(job.key, job.ttl)
        pipe.rpush(queue.key, call_id)
        pipe.sadd(queue.redis_queues_keys, queue.key)
        pipe.execute()
    except RedisError as exc:
        raise QueueUnavailable(f"the call could not be queued: Redis is unavailable ({type(exc).__name__})") from exc
    return call


def wait_for_answer(call: dict[str, Any], script: ServedScript) -> dict[str, Any]:
    """The worker's answer to the call, or an answer saying why there is none (`lost`).

    A call no worker took within QUEUE_WAIT_SECONDS is taken back from the queue (so it never
    runs) and answered 503; a call taken by a worker gets its wall-time limit plus a margin.
    """
    defaults = current_app.config["SETTINGS"].limits
    wall_seconds = math.ceil(effective_limits(defaults, {"wall_seconds": script.wall_seconds}).wall_seconds)
    if db.session().in_transaction():
        db.session.commit()  # no database connection is held while we block
    blocking, reply = get_blocking_redis(), REPLY + call["id"]
    try:
        answer = blocking.blpop([reply], timeout=QUEUE_WAIT_SECONDS)
        if answer is None:
            redis = get_redis()
            if redis.lrem(Queue(ENDPOINT_QUEUE, connection=redis).key, 1, call["id"]):
                redis.delete(Job.key_for(call["id"]))
                return _give_up(call, 503, f"no worker took the call within {QUEUE_WAIT_SECONDS} s")
            answer = blocking.blpop([reply], timeout=wall_seconds + ANSWER_MARGIN_SECONDS)
        if answer is None:
            # No worker answered in time (docs/endpoints.md): it may have run the script in part.
            message = f"the worker stopped without answering (none within {wall_seconds:g} s of taking the call)"
            return _give_up(call, 503, message + "; the script may have run in part")
        return json.loads(answer[1])
    except RedisError as exc:
        return _give_up(call, 503, f"Redis became unavailable during the call ({type(exc).__name__})")


def _give_up(call: dict[str, Any], status: int, message: str) -> dict[str, Any]:
    """Record the call as lost (unless its worker recorded it after all) and say so."""
    row = execution_row(
        call,
        status="failed",
        error_kind="lost",
        error_message=message,
        finished_at=utcnow(),
        http_status=status,
    )
    with contextlib.suppress(RedisError):
        release_slot(get_redis(), call)
    with contextlib.suppress(Exception):  # the caller gets its answer even with the database down
        record_lost(row)
        with contextlib.suppress(RedisError):
            redis = get_redis()
            redis.pipeline().hdel(INFLIGHT, call["id"]).delete(Job.key_for(call["id"])).execute()
    db.session.rollback()
    return {"id": call["id"], "status": "failed", "error_kind": "lost", "error_message": message, "http": status}


def release_slot(redis: Redis, call: dict[str, Any], pipe: Any = None) -> None:
    """The call's slot of its tenant goes back (webapp/fairness.py)."""
    tenant_slots(redis).release(call["tenant_id"], call["id"], pipe)


def record_lost(row: dict[str, Any]) -> bool:
    """Insert a lost call's row unless it exists; True if inserted. A call whose user is gone
    keeps its row without the link; one whose script is gone has nothing to belong to."""
    for attempt in (row, {**row, "user_id": None}):
        try:
            inserted = insert_ignoring_duplicates(Execution, ["id"]).values(attempt).returning(Execution.id)
            found = db.session.execute(inserted).all()
            db.session.commit()
            return bool(found)
        except IntegrityError:
            db.session.rollback()
    return False


def execution_row(call: dict[str, Any], http_status: int, response_bytes: int | None = None, **fields: Any) -> dict:
    """The execution row of a call: every column, so rows can be inserted in one batch."""
    summary = {**call["summary"], "status": http_status}
    if response_bytes is not None:
        summary["response_bytes"] = response_bytes
    return {
        "id": uuid.UUID(call["id"]),
        "tenant_id": call["tenant_id"],
        "script_id": uuid.UUID(call["script_id"]),
        "script_version": call["script_version"],
        "trigger": "endpoint",
        "scheduled_at": None,
        "status": fields["status"],
        "error_kind": fields.get("error_kind"),
        "error_message": fields.get("error_message"),
        "params": None,  # the request is not stored
        "result": None,  # nor the response
        "logs": fields.get("logs"),
        "http_summary": summary,
        "queued_at": datetime.fromisoformat(call["queued_at"]),
        "started_at": fields.get("started_at"),
        "finished_at": fields["finished_at"],
        "duration_ms": fields.get("duration_ms"),
        "worker": fields.get("worker"),
        "runtime_info": fields.get("runtime_info"),
        "user_id": call["user_id"],
    }


def reap_unrecorded_calls(redis: Redis, older_than_seconds: float) -> int:
    """Record calls left in INFLIGHT by a worker and a web process that both died."""
    reaped = 0
    now = utcnow()
    for call_id, raw in redis.hgetall(INFLIGHT).items():
        call = json.loads(raw)
        if (now - datetime.fromisoformat(call["queued_at"])).total_seconds() < older_than_seconds:
            continue
        row = execution_row(
            call,
            status="failed",
            error_kind="lost",
            error_message="the call was not recorded by its worker (it stopped) and its caller had gone",
            finished_at=now,
            http_status=503,
        )
        reaped += record_lost(row)
        redis.hdel(INFLIGHT, call_id)  # recorded, or its script is gone: either way, done
    return reaped
