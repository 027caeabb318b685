"""Execution pages: run a script from its page and watch the result arrive, the tenant's
execution history, and one execution's detail.

Contact.app style: every page works without JavaScript; htmx swaps small partials in place.
Waiting is bounded and blocks on RQ's result (`service.wait_for`), never a polling loop here:
the browser long-polls `GET /executions/<id>/result?wait=10` until the run has finished.
"""

import json
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from sqlalchemy.orm import selectinload

from webapp import htmx
from webapp.auth.identity import current_principal
from webapp.executions.service import (
    QueueUnavailable,
    RunRefused,
    is_finished,
    params_problem,
    rerun_permission,
    rerun_refusal,
    run_again,
    start_run,
    wait_for,
)
from webapp.extensions import db
from webapp.models import EXECUTION_STATUSES, TRIGGERS, Execution, Script, User
from webapp.permissions import ensure, require
from webapp.scripts.queries import BadPaging, executions_stmt, paginate, paging_args, scripts_stmt
from webapp.scripts.schedule_info import script_page
from webapp.tenancy import get_or_404

bp = Blueprint("executions", __name__)
PER_PAGE = 20
RUN_WAIT_SECONDS = 5  # POST /scripts/<id>/run answers within this when the run is quick (config RUN_WAIT_SECONDS)
LONG_POLL_SECONDS = 10  # the most one long-poll request blocks
# Sent (HX-Trigger) when a run starts or ends on the page: the script page's list refreshes at once.
CHANGED = {"HX-Trigger": "executions-changed"}


# --- template helpers -------------------------------------------------------------------------


@bp.app_template_filter("pretty_json")
def pretty_json(value: Any) -> str:
    """Indented JSON as text (autoescaped by the template, unlike `tojson`'s \\u003c escapes)."""
    return json.dumps(value, indent=2, ensure_ascii=False)


@bp.app_template_filter("duration")
def duration(ms: float | None) -> str:
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms:.1f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f} s"
    return f"{int(ms // 60_000)} min {ms % 60_000 / 1000:.0f} s"


@bp.app_template_filter("log_lines")
def log_lines(execution: Execution) -> list[dict[str, Any]]:
    """The run's log entries with their time parsed and their offset into the run.

    The run began (in the sandbox) `duration_ms` before it finished; `started_at` is earlier,
    when the worker claimed the job, and is only the fallback anchor.
    """
    anchor = execution.started_at
    if execution.finished_at is not None and execution.duration_ms is not None:
        anchor = execution.finished_at - timedelta(milliseconds=execution.duration_ms)
    lines = []
    for entry in execution.logs or []:
        entry = entry if isinstance(entry, dict) else {"message": str(entry)}
        when = _parse_time(entry.get("time"))
        offset = None
        if when is not None and anchor is not None:
            offset = max((when - anchor).total_seconds() * 1000, 0.0)
        lines.append(
            {"level": str(entry.get("level") or "log"), "time": when, "offset": offset, "message": entry.get("message")}
        )
    return lines


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


# --- running from the script page -----------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_params(text: str) -> tuple[Any, str | None]:
    """The parameters typed into the Run form, or why they are refused. Blank means {}."""
    if not text.strip():
        return {}, None
    try:
        params = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        return None, f"is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    except ValueError as exc:  # NaN / Infinity
        return None, f"is not valid JSON: {exc}"
    problem = params_problem(params)
    if problem == "must be a JSON object":
        kind = "an array" if isinstance(params, list) else "null" if params is None else type(params).__name__
        kind = {"str": "a string", "int": "a number", "float": "a number", "bool": "a boolean"}.get(kind, kind)
        problem = f'must be a JSON object such as {{"name": "Ann"}}, not {kind}'
    return params, problem


@bp.post("/scripts/<script_id>/run")
@require("scripts:run")
def run(script_id: str):
    script = get_or_404(Script, script_id)
    typed = request.form.get("params", "")
    params, problem = parse_params(typed)
    if problem:
        return _run_refused(script, typed, {"params": problem}, None, 422)
    if script.status != "active":
        return _run_refused(script, typed, {}, "This script is disabled: enable it to run it.", 409)
    try:
        execution = start_run(script, "manual", params, current_principal().user)
    except QueueUnavailable as exc:
        reason = str(exc) or "the run could not be queued"
        message = f"{reason[:1].upper()}{reason[1:]}. Nothing ran; try again in a moment."
        return _run_refused(script, typed, {}, message, 503)
    wait_for(execution, current_app.config.get("RUN_WAIT_SECONDS", RUN_WAIT_SECONDS))
    if htmx.is_htmx():  # the outcome, and the form again without any earlier error (out of band)
        form = render_template(
            "executions/_run_form.html", script=script, run={"params": typed, "errors": {}}, form_oob=True
        )
        return _result_partial(execution, backoff=False) + form, 200, CHANGED
    return redirect(url_for("executions.detail", execution_id=execution.id), 303)


def _run_refused(script: Script, typed: str, errors: dict[str, str], message: str | None, status: int):
    """The Run form again with the reason beside the field (nothing was queued, or Redis is down).

    htmx only swaps 2xx responses (htmx 2's default `responseHandling`), so the htmx answer is
    a 200 that retargets the form; without JavaScript it is the whole script page with `status`.
    """
    run = {"params": typed, "errors": errors, "message": message}
    if htmx.is_htmx():
        body = render_template("executions/_run_form.html", script=script, run=run, clear_result=True)
        return body, 200, {"HX-Retarget": "#run-form", "HX-Reswap": "outerHTML"}
    page = render_template("scripts/detail.html", script=script, run=run, **script_page(script))
    return page, status


def _wait_seconds() -> int:
    wait = request.args.get("wait", default=0, type=int) or 0
    return max(0, min(wait, LONG_POLL_SECONDS))


def _wait_bounded(execution: Execution) -> bool:
    """Waits up to ?wait= seconds; True when the next poll should back off (the wait ended
    early without an outcome, e.g. Redis unreachable), so a client never spins."""
    wait = _wait_seconds()
    if not wait or is_finished(execution):
        return False
    started = time.monotonic()
    wait_for(execution, wait)
    return not is_finished(execution) and time.monotonic() - started < wait / 2


def _result_partial(execution: Execution, backoff: bool):
    return render_template("executions/_run_result.html", execution=execution, backoff=backoff)


@bp.get("/executions/<execution_id>/result")
@require("executions:read")
def result(execution_id: str):
    """Long-poll: the run's outcome partial as soon as it has one, or after ?wait= (≤ 10) s."""
    execution = get_or_404(Execution, execution_id)
    backoff = _wait_bounded(execution)
    return _result_partial(execution, backoff), 200, CHANGED if is_finished(execution) else {}


# --- history and detail -----------------------------------------------------------------------


@bp.get("/executions")
@require("executions:read")
def index():
    status = request.args.get("status") if request.args.get("status") in EXECUTION_STATUSES else None
    trigger = request.args.get("trigger") if request.args.get("trigger") in TRIGGERS else None
    script_id = _uuid_or_none(request.args.get("script", ""))
    try:
        page, _ = paging_args(request.args)
    except BadPaging:
        page = 1
    stmt = executions_stmt().options(selectinload(Execution.script))
    if status:
        stmt = stmt.where(Execution.status == status)
    if trigger:
        stmt = stmt.where(Execution.trigger == trigger)
    if script_id:
        stmt = stmt.where(Execution.script_id == script_id)
    result_page = paginate(stmt, page, PER_PAGE)
    filters = {"status": status or "", "trigger": trigger or "", "script": str(script_id) if script_id else ""}
    if htmx.target() == "execution-table":
        return render_template("executions/_table.html", page=result_page, filters=filters)
    scripts = list(db.session.scalars(scripts_stmt().limit(1000)))
    return render_template(
        "executions/index.html",
        page=result_page,
        filters=filters,
        scripts=scripts,
        statuses=EXECUTION_STATUSES,
        triggers=TRIGGERS,
    )


def _uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value) if value else None
    except ValueError:
        return None


@bp.get("/executions/<execution_id>")
@require("executions:read")
def detail(execution_id: str):
    execution = get_or_404(Execution, execution_id)
    run_by = db.session.get(User, execution.user_id) if execution.user_id else None
    context = {
        "execution": execution,
        "run_by": run_by,
        "rerun_refusal": rerun_refusal(execution),
        "rerun_permission": rerun_permission(execution),
    }
    if htmx.target() == "execution-body":  # an unfinished run's page long-polls itself
        backoff = _wait_bounded(execution)
        return render_template("executions/_detail_body.html", backoff=backoff, **context)
    return render_template("executions/detail.html", backoff=False, **context)


@bp.post("/executions/<execution_id>/rerun")
@require("scripts:run")
def rerun(execution_id: str):
    """Run again: the script's current version with the same parameters, then its page."""
    original = get_or_404(Execution, execution_id)
    ensure(rerun_permission(original))
    try:
        execution = run_again(original, "manual", current_principal().user)
    except RunRefused as exc:
        return render_template("error.html", status=exc.refusal.status, message=exc.refusal.message), exc.refusal.status
    except QueueUnavailable as exc:
        message = f"{exc} Nothing ran; try again in a moment."
        return render_template("error.html", status=503, message=message), 503
    again = (
        "the draft again"
        if execution.trigger == "draft"
        else f"{execution.script.name} again (v{execution.script_version})"
    )
    flash(f"Started {again} with the same parameters.")
    return redirect(url_for("executions.detail", execution_id=execution.id), 303)
