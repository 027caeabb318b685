"""Draft runs: a source run once, unsaved (docs/scripting.md, "Draft runs").

A draft of a saved script is an execution like any other (trigger `draft`) that keeps the source
it ran; the worker runs that source instead of its version's, never through the compile cache.
A draft of a script not saved yet has no row to record: it is an ephemeral RQ job that carries
everything it needs and returns its outcome as the job's result, read back here.

`draft_event` is the one mapping from a draft's sample to the event its `main` gets.
"""

import contextlib
import json
import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import current_app
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.results import Result

from webapp.executions.maintenance import ALIVE_KEY
from webapp.executions.service import DEFAULT_QUEUE, MAX_WAIT_SECONDS, QueueUnavailable
from webapp.models import Tenant, User, utcnow
from webapp.redis_client import get_blocking_redis, get_redis
from webapp.scripts.validation import path_params

EPHEMERAL_JOB = "worker.jobs.run_draft"
EPHEMERAL_RESULT_SECONDS = 300  # how long a finished ephemeral draft's outcome can be read back
_ENDPOINT_KEYS = ("method", "path", "params", "query", "headers", "body", "json", "ip")


def draft_event(script_type: str, sample: dict[str, Any], method: str | None, path: str | None) -> dict[str, Any]:
    """The event a draft's `main` gets. Manual: the sample as is. Cron: a cron event fired now,
    with whatever the sample sets. Endpoint: the sample is the request, each missing key
    filled from the script's method and path (docs/endpoints.md, "The request")."""
    if script_type == "cron":
        now = utcnow().isoformat()
        return {"type": "cron", "scheduled_at": now, "fired_at": now, **sample}
    if script_type != "endpoint":
        return sample
    params = sample.get("params") if isinstance(sample.get("params"), dict) else {}
    route = path or "/"
    for name in path_params(route):
        if name in params:
            route = route.replace("{" + name + "}", str(params[name]), 1)
    has_json = sample.get("json") is not None
    event = {
        "method": method or "GET",
        "path": route,
        "params": params,
        "query": {},
        "headers": {"content-type": "application/json"} if has_json else {},
        "body": json.dumps(sample["json"]) if has_json else "",
        "json": None,
        "ip": "127.0.0.1",
    }
    event.update({key: sample[key] for key in _ENDPOINT_KEYS if key in sample})
    return event


@dataclass
class DraftOutcome:
    """An ephemeral draft's outcome, shaped like an execution for executions/_run_result.html."""

    status: str
    error_kind: str | None = None
    error_message: str | None = None
    result: Any = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    duration_ms: float | None = None
    finished_at: datetime | None = None
    started_at: datetime | None = None
    id: None = None
    script_version: None = None


def start_ephemeral(
    tenant: Tenant, user: User, script: dict[str, Any], event: dict[str, Any], limits: dict[str, Any] | None
) -> str:
    """Queue the draft of a script not saved yet; returns the id to read its outcome by.
    `script`: its form's name, type and source."""
    job_id = str(uuid.uuid4())
    request = {
        "tenant_id": tenant.id,
        "user_id": user.id,
        "name": script.get("name") or "",
        "type": script["type"],
        "source": script["source"],
        "event": event,
        "limits": limits,
    }
    data = Queue.prepare_data(
        EPHEMERAL_JOB,
        args=(request,),
        job_id=job_id,
        meta={"tenant_id": tenant.id},  # its worker takes a slot of the tenant; whose outcome it is
        description=f"draft {job_id}",  # RQ logs this: never the arguments
        timeout=current_app.config["SETTINGS"].limits.job_timeout,
        result_ttl=EPHEMERAL_RESULT_SECONDS,
        failure_ttl=EPHEMERAL_RESULT_SECONDS,
    )
    try:
        Queue(DEFAULT_QUEUE, connection=get_redis()).enqueue_many([data])
    except RedisError as exc:
        raise QueueUnavailable(f"the draft could not be queued: Redis is unavailable ({type(exc).__name__})") from exc
    return job_id


def ephemeral_outcome(job_id: str, tenant: Tenant, seconds: float) -> DraftOutcome | None:
    """The draft's outcome once it has one (waiting up to `seconds`), a pending one before;
    None when there is no such draft in this tenant (another tenant's looks like a missing one)."""
    try:
        job = Job.fetch(job_id, connection=get_redis())
    except (NoSuchJobError, RedisError, ValueError):
        return None
    if job.meta.get("tenant_id") != tenant.id or job.func_name != EPHEMERAL_JOB:
        return None
    whole = min(math.ceil(seconds), MAX_WAIT_SECONDS)
    found: Result | None = None
    with contextlib.suppress(RedisError):
        found = Job(job_id, connection=get_blocking_redis()).latest_result(timeout=whole)
    if found is None:
        status, worker = None, None
        with contextlib.suppress(RedisError):
            status, worker = (v.decode() if v else None for v in get_redis().hmget(job.key, "status", "worker_name"))
            if status == "started" and worker and not get_redis().exists(ALIVE_KEY.format(worker)):
                message = f"the worker {worker} stopped while it ran the draft"
                return DraftOutcome(status="failed", error_kind="lost", error_message=message)
        return DraftOutcome(status="running" if status == "started" else "queued")
    if found.type != Result.Type.SUCCESSFUL or not isinstance(found.return_value, dict):
        return DraftOutcome(status="failed", error_kind="exception", error_message="the worker could not run the draft")
    value = found.return_value
    return DraftOutcome(
        status=value["status"],
        error_kind=value.get("error_kind"),
        error_message=value.get("error_message"),
        result=value.get("result"),
        logs=value.get("logs") or [],
        duration_ms=value.get("duration_ms"),
        finished_at=_time(value.get("finished_at")),
    )


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


_LINE = re.compile(r"\(line (\d+), column \d+\)")


def error_line(message: str | None) -> int | None:
    """The source line an error message points at ("… (line 3, column 7)"), or None."""
    match = _LINE.search(message or "")
    return int(match.group(1)) if match else None
