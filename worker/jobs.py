"""The RQ job: run one execution in the worker's sandbox and record what happened."""

import contextlib
import json
import logging
import uuid
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import select, update

from webapp import metrics
from webapp.endpoints.http import STATUS_FOR_ERROR, body_bytes, response_problem
from webapp.extensions import db
from webapp.models import Execution, Script, ScriptVersion, Tenant, User, utcnow
from webapp.redis_client import get_redis
from worker.host_api import HostApi
from worker.runtime.sandbox import Limits
from worker.state import get_state

log = logging.getLogger(__name__)


def run_execution(execution_id: str, event_json: str | None = None) -> dict[str, Any]:
    """Run one execution. Endpoint calls pass their request as `event_json` (never stored)."""
    state = get_state()
    with state.app.app_context():
        try:
            return _run(execution_id, state, event_json)
        except Exception as exc:
            # Whatever went wrong here, the run must not stay `running`.
            log.exception("execution %s failed in the worker", execution_id)
            db.session.rollback()
            message = f"the worker could not complete the run: {type(exc).__name__}: {exc}"
            db.session.execute(
                update(Execution)
                .where(Execution.id == uuid.UUID(execution_id), Execution.status.in_(("queued", "running")))
                .values(
                    status="failed",
                    error_kind="exception",
                    error_message=_storable(message)[:2000],
                    finished_at=utcnow(),
                )
            )
            db.session.commit()
            with contextlib.suppress(RedisError):
                metrics.mark_busy(get_redis(), state.name, False)
            return {"id": execution_id, "status": "failed", "error_kind": "exception", "error_message": message}
        finally:
            db.session.remove()


def _run(execution_id: str, state: Any, event_json: str | None) -> dict[str, Any]:
    started = utcnow()
    claimed = db.session.execute(
        update(Execution)
        .where(Execution.id == uuid.UUID(execution_id), Execution.status == "queued")
        .values(status="running", started_at=started, worker=state.name)
    ).rowcount
    db.session.commit()
    if not claimed:  # already run, lost, or deleted: never run twice
        return {"id": execution_id, "status": "not-claimed"}
    # One query for everything the run needs: the execution, its script, version, tenant, user.
    execution, script, version, tenant, user = db.session.execute(
        select(Execution, Script, ScriptVersion, Tenant, User)
        .join(Script, Script.id == Execution.script_id)
        .join(Tenant, Tenant.id == Script.tenant_id)
        .join(
            ScriptVersion,
            (ScriptVersion.script_id == Execution.script_id) & (ScriptVersion.version == Execution.script_version),
        )
        .outerjoin(User, User.id == Execution.user_id)
        .where(Execution.id == uuid.UUID(execution_id))
    ).one()
    stale = _stale_cron_fire(execution, script)
    if stale:
        execution.status, execution.error_message, execution.finished_at = "skipped", stale, utcnow()
        db.session.commit()
        _metrics(metrics.count_event, "cron_skips")
        return {"id": execution_id, "status": "skipped"}
    _metrics(metrics.mark_busy, state.name, True)
    outcome = state.sandbox.run(
        {
            "script_id": str(script.id),
            "version": execution.script_version,
            "source": version.source,
            "event_json": event_json or json.dumps(execution.params if execution.params is not None else {}),
            "context": _context(execution, script, version, tenant, user),
        },
        effective_limits(state.app.config["SETTINGS"].limits, version.limits),
        HostApi(script.tenant_id),
    )
    try:
        result = json.loads(outcome["result_json"]) if outcome["result_json"] is not None else None
    except RecursionError:
        outcome.update(status="failed", error_kind="exception", error_message="the result is nested too deeply")
        result = None
    execution.status = outcome["status"]
    execution.error_kind = outcome["error_kind"]
    execution.error_message = _storable(outcome["error_message"])
    execution.logs = [{**entry, "message": _storable(entry.get("message"))} for entry in outcome["logs"]]
    answer: dict[str, Any] = {"id": execution_id}
    if execution.trigger == "endpoint":
        problem = response_problem(result) if execution.status == "succeeded" else None
        if problem:
            execution.status, execution.error_kind, execution.error_message = "failed", "bad_response", problem
        _summarise_response(execution, result)
        answer["result"] = result if execution.status == "succeeded" else None  # to the caller, not stored
    else:
        execution.result = result
    execution.finished_at = utcnow()
    execution.duration_ms = outcome.get("wall_ms")
    execution.runtime_info = {
        "cache_hit": outcome["cache_hit"],
        "runtime_id": outcome["runtime_id"],
        "runtime_runs": outcome["runtime_runs"],
        "cpu_ms": outcome["cpu_ms"],
    }
    db.session.commit()
    _metrics(metrics.mark_busy, state.name, False)
    recycled = _recycles(state, outcome)
    seconds = (execution.duration_ms or 0) / 1000
    _metrics(
        metrics.record_run,
        str(script.id),
        version.type,
        execution.status,
        seconds,
        execution.error_kind,
        outcome["cache_hit"] if outcome["runtime_id"] else None,
        recycled,
    )
    answer.update(status=execution.status, error_kind=execution.error_kind, error_message=execution.error_message)
    return answer


def _recycles(state: Any, outcome: dict[str, Any]) -> int:
    """Runtimes replaced since the last run: by the sandbox itself, or by killing it."""
    if outcome["runtime_id"] is None:  # the sandbox process was killed and will be replaced
        state.recycles_seen = 0
        return 1
    total = outcome.get("runtimes_recycled", 0)
    seen = state.recycles_seen
    state.recycles_seen = total
    return total - seen if total >= seen else total


def _metrics(fn: Any, *args: Any) -> None:
    """Metrics never fail a run."""
    try:
        fn(get_redis(), *args)
    except RedisError:
        log.warning("metrics not recorded: Redis is unavailable")


def _summarise_response(execution: Execution, result: Any) -> None:
    """Endpoint runs keep method, path, status and sizes: never bodies or credentials."""
    summary = dict(execution.http_summary or {})
    if execution.status == "succeeded":
        summary["status"] = (result or {}).get("status", 200)
        summary["response_bytes"] = len(body_bytes(result))
    else:
        summary["status"] = STATUS_FOR_ERROR.get(execution.error_kind or "", 500)
    execution.http_summary = summary


def effective_limits(defaults: Any, own: dict | None) -> Limits:
    own = own or {}
    return Limits(
        cpu_seconds=min(own.get("cpu_seconds") or defaults.cpu_seconds, defaults.cpu_seconds),
        wall_seconds=min(own.get("wall_seconds") or defaults.wall_seconds, defaults.wall_seconds),
        memory_bytes=int(min(own.get("memory_mb") or defaults.memory_mb, defaults.memory_mb) * 1024 * 1024),
        log_bytes=defaults.log_kb * 1024,
        result_bytes=defaults.result_kb * 1024,
    )


def _context(
    execution: Execution, script: Script, version: ScriptVersion, tenant: Tenant, user: User | None
) -> dict[str, Any]:
    return {
        "tenant": {"id": tenant.id, "name": tenant.name},
        "user": {"id": user.id, "email": user.email} if user else None,
        "script": {"id": str(script.id), "name": script.name, "type": version.type, "version": version.version},
        "execution": {"id": str(execution.id), "trigger": execution.trigger},
    }


def _stale_cron_fire(execution: Execution, script: Script) -> str | None:
    """A cron fire queued before its script was disabled or changed does not run."""
    if execution.trigger != "cron":
        return None
    if script.status != "active" or script.type != "cron":
        return "skipped: the script was disabled or is no longer a cron script"
    if script.version != execution.script_version:
        return f"skipped: the script changed to version {script.version} after this fire was queued"
    return None


def _storable(text: str | None) -> str | None:
    """Text PostgreSQL accepts: no NUL characters, no lone surrogates."""
    if text is None:
        return None
    return text.replace("\x00", "\\0").encode("utf-8", "replace").decode("utf-8")
