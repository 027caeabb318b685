"""Starting manual and API runs (also again, from an earlier run) and waiting for them; queueing
runs recorded elsewhere (cron fires, recorded by worker/scheduler.py). Endpoint calls take their
own path (endpoints/calls.py).

The execution row is written first (`queued`), then the RQ job (id = execution id) is
enqueued; a worker records `running` and the outcome. Waiting uses RQ's blocking result read
(no polling loop).
"""

import contextlib
import json
import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import current_app
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from webapp.audit.log import record, script_target
from webapp.extensions import db
from webapp.models import Execution, Script, Tenant, User, utcnow
from webapp.redis_client import get_blocking_redis, get_redis

ENDPOINT_QUEUE = "endpoints"  # served first by every worker
DEFAULT_QUEUE = "default"
QUEUES = (ENDPOINT_QUEUE, DEFAULT_QUEUE)
JOB_FUNCTION = "worker.jobs.run_execution"
MAX_WAIT_SECONDS = 60
FINISHED = ("succeeded", "failed", "skipped")
# Runs nobody started by hand: their executions are their record (docs/audit.md).
UNAUDITED_TRIGGERS = ("cron", "endpoint")


def params_problem(params: Any) -> str | None:
    """Why these run parameters are refused, or None."""
    if not isinstance(params, dict):
        return "must be a JSON object"
    size = len(json.dumps(params))
    ceiling = current_app.config["SETTINGS"].limits.body_kb * 1024
    if size > ceiling:
        return f"must be at most {ceiling // 1024} KiB of JSON (got {size // 1024} KiB)"
    return None


class QueueUnavailable(Exception):
    """Redis could not take the job; the execution was recorded as failed."""


def _new_execution(
    script: Script,
    trigger: str,
    params: Any,
    user: User | None = None,
    scheduled_at: datetime | None = None,
    source: str | None = None,
) -> Execution:
    return Execution(
        id=uuid.uuid4(),
        tenant_id=script.tenant_id,
        script_id=script.id,
        script_version=script.version,
        trigger=trigger,
        scheduled_at=scheduled_at,
        params=params if params is not None else {},
        status="queued",
        queued_at=utcnow(),
        user_id=user.id if user else None,
        source=source,
    )


def _job_data(execution_id: uuid.UUID, tenant_id: int) -> Any:
    return Queue.prepare_data(
        JOB_FUNCTION,
        args=(str(execution_id),),
        job_id=str(execution_id),
        meta={"tenant_id": tenant_id},  # its worker takes a slot of the tenant (webapp/fairness.py)
        description=f"execution {execution_id}",  # RQ logs this: never the arguments (request bodies)
        timeout=current_app.config["SETTINGS"].limits.job_timeout,  # a backstop (webapp/limits.py)
        result_ttl=300,
        failure_ttl=24 * 3600,
    )


def start_run(
    script: Script,
    trigger: str,
    params: Any = None,
    user: User | None = None,
    scheduled_at: datetime | None = None,
    source: str | None = None,
    again_of: Execution | None = None,
) -> Execution:
    """Record the run `queued` (a manual, API or draft run with its audit entry) and queue it;
    `source`: a draft's (trigger `draft`), run instead of the script's version."""
    execution = _new_execution(script, trigger, params, user, scheduled_at, source)
    db.session.add(execution)
    if trigger not in UNAUDITED_TRIGGERS:
        summary = {"execution": str(execution.id), "trigger": trigger, "version": script.version}
        if again_of is not None:
            summary["again_of"] = str(again_of.id)
        record(script.tenant_id, "script.run", script_target(script), summary)
    db.session.commit()
    queue = Queue(ENDPOINT_QUEUE if trigger == "endpoint" else DEFAULT_QUEUE, connection=get_redis())
    try:
        queue.enqueue_many([_job_data(execution.id, execution.tenant_id)])
    except RedisError as exc:
        execution.status, execution.error_kind = "failed", "lost"
        execution.error_message = f"the run could not be queued: Redis is unavailable ({type(exc).__name__})"
        execution.finished_at = utcnow()
        db.session.commit()
        raise QueueUnavailable(execution.error_message) from exc
    return execution


@dataclass(frozen=True)
class Refusal:
    """Why a run cannot start: an HTTP status, a code for the API, a sentence for people."""

    status: int
    code: str
    message: str


class RunRefused(Exception):
    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def rerun_refusal(original: Execution) -> Refusal | None:
    """Why `original` cannot be run again, or None."""
    if original.trigger == "endpoint":
        return Refusal(
            422,
            "not_replayable",
            "An endpoint call cannot be run again: its request is stored only as a summary, so it cannot be "
            "replayed. Call the endpoint again instead.",
        )
    if original.params is None:  # webapp/quotas.py kept a note instead: the storage quota was full
        return Refusal(
            422,
            "params_not_kept",
            "Its parameters were not kept (the tenant's storage quota was full), so it cannot be run again "
            "with them. Run the script with new parameters instead.",
        )
    if original.script.status != "active" and original.trigger != "draft":  # a draft goes nowhere live
        return Refusal(409, "script_disabled", "The script is disabled: enable it to run it again.")
    return None


def rerun_permission(original: Execution) -> str:
    """What running `original` again takes: a draft runs unsaved code, as a new draft does."""
    return "scripts:write" if original.trigger == "draft" else "scripts:run"


def run_again(original: Execution, trigger: str, user: User | None) -> Execution:
    """A new run of the script's current version with the parameters `original` had; a draft
    runs its source again, as a draft."""
    refusal = rerun_refusal(original)
    if refusal is None and (problem := params_problem(original.params)):
        refusal = Refusal(422, "invalid_params", f"The original parameters {problem}.")
    if refusal is not None:
        raise RunRefused(refusal)
    if original.trigger == "draft":
        return start_run(original.script, "draft", original.params, user, source=original.source, again_of=original)
    return start_run(original.script, trigger, original.params, user, again_of=original)


def wait_for(execution: Execution, seconds: float) -> Execution:
    """Block until the run finishes or `seconds` pass; returns the refreshed execution."""
    whole = min(math.ceil(seconds), MAX_WAIT_SECONDS)  # RQ's blocking read takes whole seconds
    if whole > 0 and execution.status not in FINISHED:
        job_id = str(execution.id)
        # End the read transaction: the connection goes back to the pool while we block (many
        # callers may wait at once), and nothing below touches the database until refresh.
        db.session.commit()
        with contextlib.suppress(NoSuchJobError, RedisError):
            Job(job_id, connection=get_blocking_redis()).latest_result(timeout=whole)
    db.session.refresh(execution)
    return execution


def is_finished(execution: Execution) -> bool:
    return execution.status in FINISHED


def queue_recorded_runs(execution_ids: list[uuid.UUID], redis: Redis | None = None) -> None:
    """Put recorded (`queued`) runs on the default queue, in one round trip. A run queued twice
    still runs once: its worker claims it from `queued`."""
    if not execution_ids:
        return
    tenants = dict(
        db.session.execute(select(Execution.id, Execution.tenant_id).where(Execution.id.in_(execution_ids))).all()
    )
    queue_runs({eid: tenants[eid] for eid in execution_ids if eid in tenants}, redis)


def queue_runs(runs: dict[uuid.UUID, int], redis: Redis | None = None) -> None:
    """Put recorded (`queued`) runs, execution id -> tenant id, on the default queue in one
    round trip. Not a transaction: should the connection drop halfway, the runs not queued
    are queued again by whoever recorded them (a run queued twice still runs once)."""
    if not runs:
        return
    redis = redis or get_redis()
    with redis.pipeline(transaction=False) as pipe:
        jobs = [_job_data(eid, tenant_id) for eid, tenant_id in runs.items()]
        Queue(DEFAULT_QUEUE, connection=redis).enqueue_many(jobs, pipeline=pipe)
        pipe.execute()


def run_context(
    execution_id: object, trigger: str, script: Script, tenant: Tenant, user: User | None, script_type: str
) -> dict[str, Any]:
    """The `context` a script sees (docs/scripting.md): who runs what, in which tenant. A draft
    of a script not saved yet has no script id, version or execution id (null)."""
    return {
        "tenant": {"id": tenant.id, "name": tenant.name},
        "user": {"id": user.id, "email": user.email} if user else None,
        "script": {
            "id": str(script.id) if script.id else None,
            "name": script.name,
            "type": script_type,
            "version": script.version,
        },
        "execution": {"id": str(execution_id) if execution_id else None, "trigger": trigger},
    }


def insert_ignoring_duplicates(model: Any, keys: list[str]) -> Any:
    """An INSERT that skips rows clashing on `keys` (both dialects we run on have it)."""
    insert = pg_insert if db.engine.dialect.name == "postgresql" else sqlite_insert
    return insert(model).on_conflict_do_nothing(index_elements=keys)
