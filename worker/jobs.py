"""The RQ job: run one execution in the worker's sandbox and record what happened."""

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, TypeVar

from redis.exceptions import RedisError
from sqlalchemy import select, update
from sqlalchemy.exc import InterfaceError, OperationalError

from webapp import metrics, quotas
from webapp.endpoints.calls import execution_row
from webapp.endpoints.http import STATUS_FOR_ERROR, response_problem, response_summary
from webapp.executions.service import run_context
from webapp.extensions import db
from webapp.limits import EffectiveLimits, effective_limits
from webapp.models import Execution, Script, ScriptVersion, Tenant, User, utcnow
from webapp.redis_client import get_redis
from worker.host_api import READ_AT_FIRST_FETCH, HostApi
from worker.redaction import Redactor
from worker.state import get_state

log = logging.getLogger(__name__)
T = TypeVar("T")


def run_execution(execution_id: str, counts: metrics.RunCounts | None = None) -> dict[str, Any]:
    """Run one recorded execution (manual, API, draft or cron); its metrics join `counts` when
    given (the worker writes them with the run's end), else are written here."""
    state = get_state()
    with state.app.app_context():
        try:
            return _run(execution_id, state, counts)
        except Exception as exc:
            # Whatever went wrong here, the run must not stay `running`.
            log.exception("execution %s failed in the worker", execution_id)
            with contextlib.suppress(Exception):
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
            return {"id": execution_id, "status": "failed", "error_kind": "exception", "error_message": message}
        finally:
            _session_done()


def _run(execution_id: str, state: Any, counts: metrics.RunCounts | None) -> dict[str, Any]:
    run_id, started = uuid.UUID(execution_id), utcnow()
    if not with_database(lambda: _claim(run_id, started, state.name), f"execution {execution_id}"):
        return {"id": execution_id, "status": "not-claimed"}  # already run, lost, or deleted: never twice
    execution, script, version, tenant, user = with_database(lambda: _load(run_id), f"execution {execution_id}")
    script_id, script_type = str(script.id), version.type
    stale = _stale_cron_fire(execution, script)
    if stale:
        _record(run_id, status="skipped", error_message=stale, finished_at=utcnow())
        if counts is not None:
            counts.event("cron_skips")
        else:
            _metrics(metrics.count_event, "cron_skips")
        return {"id": execution_id, "status": "skipped"}
    event_json = json.dumps(execution.params if execution.params is not None else {})
    context = run_context(execution_id, execution.trigger, script, tenant, user, script_type)
    context["script"]["version"] = execution.script_version
    draft = execution.trigger == "draft"
    # A draft runs its own source under the version's limits, and never through the compile
    # cache (version None): cached under the version's key it would replace the live code.
    to_run = Version(None, execution.source or "", version.limits) if draft else _snapshot(version)
    endpoint = script_type == "endpoint"  # a draft of an endpoint script: its result must be a response
    counted = (script.tenant_id, execution.params, execution.source)
    hosts = tenant.fetch_allowed_hosts
    db.session.close()  # no connection is held while the run waits: a worker keeps many in flight
    ran = _run_in_sandbox(state, script_id, counted[0], to_run, event_json, context, endpoint, hosts)
    _record(
        run_id,
        counted,
        secrets_read=ran.secrets_read,
        http_calls=ran.http_calls,
        status=ran.status,
        error_kind=ran.error_kind,
        error_message=ran.error_message,
        logs=ran.logs,
        result=ran.result,
        finished_at=utcnow(),
        duration_ms=ran.duration_ms,
        runtime_info=ran.runtime_info,
    )
    _count(script_id, script_type, ran, counts)
    return {"id": execution_id, "status": ran.status, "error_kind": ran.error_kind, "error_message": ran.error_message}


DATABASE_RETRY_DELAYS = (0.5, 1, 2, 4, 8, 15)  # ~30 s: a database restart is waited out, not failed


def with_database(action: Callable[[], T], what: str) -> T:
    """`action()`, tried again while the database is unreachable (or SQLite is locked)."""
    for delay in (*DATABASE_RETRY_DELAYS, None):
        try:
            return action()
        except (OperationalError, InterfaceError) as exc:
            with contextlib.suppress(Exception):
                db.session.rollback()
            if delay is None:
                raise
            log.warning("%s: the database is unavailable (%s); retrying in %s s", what, type(exc).__name__, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _claim(run_id: uuid.UUID, started: datetime, worker: str) -> bool:
    """Mark the run ours. Idempotent for this attempt, so a retry after a lost reply still wins."""
    mine = (Execution.status == "running") & (Execution.worker == worker) & (Execution.started_at == started)
    claimed = db.session.execute(
        update(Execution)
        .where(Execution.id == run_id, (Execution.status == "queued") | mine)
        .values(status="running", started_at=started, worker=worker)
    ).rowcount
    db.session.commit()
    return bool(claimed)


def _load(run_id: uuid.UUID) -> Any:
    """One query for everything the run needs: the execution, its script, version, tenant, user."""
    return db.session.execute(
        select(Execution, Script, ScriptVersion, Tenant, User)
        .join(Script, Script.id == Execution.script_id)
        .join(Tenant, Tenant.id == Script.tenant_id)
        .join(
            ScriptVersion,
            (ScriptVersion.script_id == Execution.script_id) & (ScriptVersion.version == Execution.script_version),
        )
        .outerjoin(User, User.id == Execution.user_id)
        .where(Execution.id == run_id)
    ).one()


def _record(run_id: uuid.UUID, counted: tuple[int, Any, str | None] | None = None, **values: Any) -> None:
    """Write a run's outcome; a database restart delays it, and does not lose it. `counted`:
    (tenant id, the run's params, a draft's source) when what it keeps counts against the
    tenant's storage quota."""

    def write() -> None:
        row = values
        if counted is not None:
            tenant_id, params, source = counted
            kept = {**values, "id": run_id, "tenant_id": tenant_id, "params": params, "source": source}
            row = quotas.count_outcomes([kept])[0]
            del row["id"], row["tenant_id"], row["source"]  # the source was written when queued
            if row["params"] is params:  # written when the run was queued; rewritten only if dropped
                del row["params"]
        written = db.session.execute(update(Execution).where(Execution.id == run_id).values(**row)).rowcount
        if written or counted is None:
            db.session.commit()
        else:  # deleted with its script meanwhile: nothing kept, nothing to count
            db.session.rollback()

    with_database(write, f"execution {run_id}")


def run_endpoint_call(
    call: dict[str, Any], event: dict[str, Any], counts: metrics.RunCounts | None = None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Answer one endpoint call: (the answer for its caller, its execution row to record).

    Nothing is written here: the worker hands the answer back first and records the row after
    (webapp/endpoints/calls.py); the run's metrics join `counts`, written with the row. The
    request and response bodies are in neither the row nor the logs."""
    state = get_state()
    with state.app.app_context():
        try:
            return _answer(call, event, state, counts)
        except Exception as exc:
            log.exception("endpoint call %s failed in the worker", call["id"])
            db.session.rollback()
            message = f"the worker could not complete the call: {type(exc).__name__}: {exc}"
            answer = {"id": call["id"], "status": "failed", "error_kind": "exception", "error_message": message}
            row = execution_row(
                call,
                500,
                status="failed",
                error_kind="exception",
                error_message=_storable(message)[:2000],
                finished_at=utcnow(),
                worker=state.name,
            )
            return answer, row
        finally:
            _session_done()


def _session_done() -> None:
    """The run's session ends; a connection the database dropped meanwhile (a restart) must
    not fail the run's end: the pool replaces it."""
    try:
        db.session.remove()
    except (OperationalError, InterfaceError):
        log.warning("a database connection was lost; it is replaced")
        db.session.registry.clear()  # remove() raised before forgetting the session


def _answer(
    call: dict[str, Any], event: dict[str, Any], state: Any, counts: metrics.RunCounts | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    started = utcnow()
    script_id, number = uuid.UUID(call["script_id"]), call["script_version"]
    version = with_database(lambda: _version(script_id, number), f"endpoint call {call['id']}")
    # No connection is held while the run waits: a worker keeps many runs in flight, and a
    # connection the database dropped meanwhile would fail the call's end, not just a query.
    db.session.close()
    if version is None:  # deleted since the call was routed: nothing to run, nothing to record against
        message = "the script was deleted before the call ran"
        return {"id": call["id"], "status": "failed", "error_kind": "lost", "error_message": message}, None
    hosts = call.get("fetch_allowed_hosts", READ_AT_FIRST_FETCH)  # a call queued by an older web process: read
    ran = _run_in_sandbox(
        state, call["script_id"], call["tenant_id"], version, json.dumps(event), call["context"], True, hosts
    )
    result = ran.response  # sent as the script returned it, secrets included (docs/secrets.md)
    succeeded = ran.status == "succeeded"
    row = execution_row(
        call,
        (result or {}).get("status", 200) if succeeded else STATUS_FOR_ERROR.get(ran.error_kind or "", 500),
        ran.response_summary,
        status=ran.status,
        error_kind=ran.error_kind,
        error_message=ran.error_message,
        logs=ran.logs,
        started_at=started,
        finished_at=utcnow(),
        duration_ms=ran.duration_ms,
        worker=state.name,
        runtime_info=ran.runtime_info,
        secrets_read=ran.secrets_read,
        http_calls=ran.http_calls,
    )
    _count(call["script_id"], "endpoint", ran, counts)
    answer = {"id": call["id"], "status": ran.status, "error_kind": ran.error_kind, "error_message": ran.error_message}
    answer["result"] = result if succeeded else None
    return answer, row


def run_draft(request: dict[str, Any]) -> dict[str, Any]:
    """Run the draft of a script not saved yet (webapp/executions/drafts.py): nothing is
    recorded; the outcome is the job's result."""
    state = get_state()
    with state.app.app_context():
        try:
            tenant, user = with_database(lambda: _draft_owners(request), "a draft run")
            script = Script(name=request["name"], version=None)
            context = run_context(None, "draft", script, tenant, user, request["type"])
            to_run = Version(None, request["source"], request["limits"])
            endpoint = request["type"] == "endpoint"
            event_json = json.dumps(request["event"])
            hosts, tenant_id = tenant.fetch_allowed_hosts, tenant.id
            db.session.close()  # no connection is held while the run waits
            ran = _run_in_sandbox(state, "draft", tenant_id, to_run, event_json, context, endpoint, hosts)
        finally:
            _session_done()
    return {
        "status": ran.status,
        "result": ran.result,
        "logs": ran.logs,
        "error_kind": ran.error_kind,
        "error_message": ran.error_message,
        "duration_ms": ran.duration_ms,
        "finished_at": utcnow().isoformat(),
    }


def _draft_owners(request: dict[str, Any]) -> tuple[Tenant, User | None]:
    tenant = db.session.get(Tenant, request["tenant_id"])
    if tenant is None:
        raise LookupError("the draft's tenant no longer exists")
    return tenant, db.session.get(User, request["user_id"])


@dataclass
class Ran:
    """What the sandbox made of one run, ready to be stored: every field but `response` is
    redacted of the secret values the run read."""

    status: str
    error_kind: str | None
    error_message: str | None
    logs: list[dict[str, Any]]
    result: Any
    duration_ms: float | None
    runtime_info: dict[str, Any]
    cache_hit: bool | None
    recycled: int
    secrets_read: list[str] | None  # names
    http_calls: list[dict[str, Any]] | None  # what each fetch was (worker/fetch/client.py summary)
    response: Any = None  # endpoint runs: the result as returned, for the caller only
    response_summary: dict[str, Any] | None = None  # endpoint runs that made a response: what the record keeps


class RunFailed(Exception):
    """The worker failed around a run; the message is redacted of the run's secret values."""


def _run_in_sandbox(
    state: Any,
    script_id: str,
    tenant_id: int,
    version: "Version",
    event_json: str,
    context: dict[str, Any],
    endpoint: bool,
    allowed_hosts: Sequence[str] | object | None,
) -> Ran:
    settings = state.app.config["SETTINGS"]
    limits = effective_limits(settings.limits, version.limits)
    # The fetches' deadline: the sandbox's own wall limit starts a moment later, so a call
    # still waiting on the network has ended before the sandbox is killed for the wall time.
    host = HostApi(tenant_id, settings.fetch, time.monotonic() + limits.wall_seconds, allowed_hosts)
    try:
        return _outcome(state, host, script_id, tenant_id, version, event_json, context, endpoint, limits)
    except Exception as exc:
        # What failed may quote a value the run read: only its redacted text goes on.
        message = Redactor(host.secrets_read).text(f"{type(exc).__name__}: {exc}")
        raise RunFailed(message) from None
    finally:
        host.close()


def _outcome(
    state: Any,
    host: HostApi,
    script_id: str,
    tenant_id: int,
    version: "Version",
    event_json: str,
    context: dict[str, Any],
    endpoint: bool,
    limits: EffectiveLimits,
) -> Ran:
    state.set_busy(True)
    try:
        outcome = state.sandbox.run(
            {
                "tenant_id": tenant_id,
                "script_id": script_id,
                "version": version.version,
                "source": version.source,
                "event_json": event_json,
                "context": context,
            },
            limits,
            host,
        )
    finally:
        state.set_busy(False)
        host.close()  # fetches still in flight end with the run, and are recorded as cut off
    try:
        response = json.loads(outcome["result_json"]) if outcome["result_json"] is not None else None
    except RecursionError:
        outcome.update(status="failed", error_kind="exception", error_message="the result is nested too deeply")
        response = None
    if endpoint and outcome["status"] == "succeeded":
        problem = response_problem(response)
        if problem:
            outcome.update(status="failed", error_kind="bad_response", error_message=problem)
    # The one place a run's record is redacted: nothing of it is stored, logged or answered before.
    redact = Redactor(host.secrets_read)
    result = json.loads(redact.json_text(outcome["result_json"])) if redact and response is not None else response
    summary = None
    if endpoint and outcome["status"] == "succeeded":
        summary = response_summary(response)  # its content type is the script's header: redacted too
        summary["response_type"] = redact.text(summary["response_type"])
    return Ran(
        status=outcome["status"],
        error_kind=outcome["error_kind"],
        error_message=_storable(redact.text(outcome["error_message"])),
        logs=[{**entry, "message": _storable(redact.text(entry.get("message")))} for entry in outcome["logs"]],
        result=result,
        duration_ms=outcome.get("wall_ms"),
        runtime_info={
            "cache_hit": outcome["cache_hit"],
            "runtime_id": outcome["runtime_id"],
            "runtime_runs": outcome["runtime_runs"],
            "cpu_ms": outcome["cpu_ms"],
        },
        cache_hit=outcome["cache_hit"] if outcome["runtime_id"] and version.version is not None else None,
        recycled=outcome.get("recycled", 0),
        secrets_read=sorted(host.secrets_read) or None,
        http_calls=_redacted_calls(host, redact),
        response=response if outcome["status"] == "succeeded" else None,
        response_summary=summary,
    )


def _redacted_calls(host: HostApi, redact: Redactor) -> list[dict[str, Any]] | None:
    """The run's fetch summaries; a URL built from a secret value shows its name instead."""
    calls = host.http_calls
    if not calls or not redact:
        return calls
    return [{**call, "url": redact.url(call["url"])} for call in calls]


def _count(script_id: str, script_type: str, ran: Ran, counts: metrics.RunCounts | None = None) -> None:
    seconds = (ran.duration_ms or 0) / 1000
    kind, hit, recycled, calls = ran.error_kind, ran.cache_hit, ran.recycled, ran.http_calls
    if counts is not None:
        counts.add(script_id, script_type, ran.status, seconds, kind, hit, recycled, calls)
    else:
        _metrics(metrics.record_run, script_id, script_type, ran.status, seconds, kind, hit, recycled, calls)


def _metrics(fn: Any, *args: Any) -> None:
    """Metrics never fail a run."""
    try:
        fn(get_redis(), *args)
    except RedisError:
        log.warning("metrics not recorded: Redis is unavailable")


@dataclass(frozen=True)
class Version:
    """What a run needs of a script version: immutable once saved, so cacheable. A draft's has
    no version number (None): the sandbox compiles it for that run only."""

    version: int | None
    source: str
    limits: dict[str, Any] | None


def _snapshot(version: ScriptVersion) -> Version:
    return Version(version.version, version.source, version.limits)


@lru_cache(maxsize=256)
def _version(script_id: uuid.UUID, number: int) -> Version | None:
    """A script version, loaded once per worker (versions never change; a new one is a new key)."""
    found = db.session.scalar(
        select(ScriptVersion).where(ScriptVersion.script_id == script_id, ScriptVersion.version == number)
    )
    return _snapshot(found) if found is not None else None


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
