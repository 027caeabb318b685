"""Scripts, versions and executions over REST."""

from flask import request
from sqlalchemy.exc import InterfaceError, OperationalError

from webapp.api.blueprint import bp
from webapp.api.helpers import MAX_VERSION, json_body, page_of
from webapp.auth.identity import current_principal
from webapp.errors import ApiError
from webapp.executions import service as executions
from webapp.executions.drafts import draft_event
from webapp.extensions import db
from webapp.models import Execution, Script
from webapp.permissions import ensure, require
from webapp.scripts import service
from webapp.scripts.fields import SCRIPT_STATUSES, SCRIPT_TYPES
from webapp.scripts.queries import executions_stmt, scripts_stmt, versions_stmt
from webapp.scripts.validation import ValidationFailed, draft_source_problem
from webapp.serializers import execution_json, script_json, version_json
from webapp.tenancy import current_tenant, get_or_404


def _failed(exc: ValidationFailed) -> ApiError:
    if isinstance(exc, service.QuotaReached):
        return ApiError(422, exc.message, code="quota_exceeded", quota=exc.quota)
    message = {409: "conflict", 404: "not found"}.get(exc.status, "invalid fields")
    return ApiError(exc.status, message, exc.fields)


@bp.get("/scripts")
@require("scripts:read")
def list_scripts():
    type_, status = request.args.get("type"), request.args.get("status")
    if type_ and type_ not in SCRIPT_TYPES:
        raise ApiError(422, "invalid filter", {"type": f"must be one of {', '.join(SCRIPT_TYPES)}"})
    if status and status not in SCRIPT_STATUSES:
        raise ApiError(422, "invalid filter", {"status": f"must be one of {', '.join(SCRIPT_STATUSES)}"})
    return page_of(scripts_stmt(type_, status, request.args.get("q")), script_json)


@bp.post("/scripts")
@require("scripts:write")
def create_script():
    try:
        script = service.create_script(current_tenant(), current_principal().user, json_body())
    except ValidationFailed as exc:
        raise _failed(exc) from exc
    return script_json(script), 201


@bp.get("/scripts/<script_id>")
@require("scripts:read")
def get_script(script_id: str):
    return script_json(get_or_404(Script, script_id))


@bp.patch("/scripts/<script_id>")
@require("scripts:write")
def update_script(script_id: str):
    script = get_or_404(Script, script_id)
    try:
        service.update_script(script, current_principal().user, json_body())
    except ValidationFailed as exc:
        raise _failed(exc) from exc
    return script_json(script)


@bp.delete("/scripts/<script_id>")
@require("scripts:write")
def delete_script(script_id: str):
    service.delete_script(get_or_404(Script, script_id))
    return "", 204


@bp.get("/scripts/<script_id>/versions")
@require("scripts:read")
def list_versions(script_id: str):
    return page_of(versions_stmt(get_or_404(Script, script_id)), version_json)


@bp.get("/scripts/<script_id>/versions/<int:version>")
@require("scripts:read")
def get_version(script_id: str, version: int):
    script = get_or_404(Script, script_id)
    found = service.version_of(script, version) if version <= MAX_VERSION else None
    if found is None:
        raise ApiError(404, f"version {version} does not exist")
    return version_json(found)


@bp.post("/scripts/<script_id>/rollback")
@require("scripts:write")
def rollback(script_id: str):
    script = get_or_404(Script, script_id)
    version = json_body().get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ApiError(422, "invalid fields", {"version": "must be an integer"})
    if not 1 <= version <= MAX_VERSION:
        raise ApiError(404, "not found", {"version": f"version {version} does not exist"})  # as a missing one
    try:
        service.rollback(script, current_principal().user, version)
    except ValidationFailed as exc:
        raise _failed(exc) from exc
    return script_json(script)


@bp.post("/scripts/<script_id>/run")
@require("scripts:run")
def run_script(script_id: str):
    """A run of the saved script (trigger `api`), or with `source` a draft (trigger `draft`)."""
    script = get_or_404(Script, script_id)
    body = json_body() if request.data else {}
    params, source = body.get("params", {}), body.get("source")
    draft = "source" in body
    if draft:
        ensure("scripts:write")  # a draft runs code nobody saved or reviewed
    problem = executions.params_problem(params)
    if problem:
        raise ApiError(422, "invalid fields", {"params": problem})
    wait = _wait(body)
    if draft and (problem := draft_source_problem(source)):
        raise ApiError(422, "invalid fields", {"source": problem})
    if script.status != "active" and not draft:  # a draft goes nowhere live
        raise ApiError(409, "the script is disabled: enable it to run it", code="script_disabled")
    user = current_principal().user
    try:
        if draft:
            event = draft_event(script.type, params, script.endpoint_method, script.endpoint_path)
            execution = executions.start_run(script, "draft", event, user, source=source)
        else:
            execution = executions.start_run(script, "api", params, user)
    except executions.QueueUnavailable as exc:
        raise ApiError(503, str(exc), code="queue_unavailable") from exc
    return _started(execution, wait)


@bp.post("/executions/<execution_id>/rerun")
@require("scripts:run")
def rerun_execution(execution_id: str):
    """A new run of the script's current version with the parameters the execution had."""
    original = get_or_404(Execution, execution_id)
    ensure(executions.rerun_permission(original))
    wait = _wait(json_body() if request.data else {})
    try:
        execution = executions.run_again(original, "api", current_principal().user)
    except executions.RunRefused as exc:
        raise ApiError(exc.refusal.status, exc.refusal.message, code=exc.refusal.code) from exc
    except executions.QueueUnavailable as exc:
        raise ApiError(503, str(exc), code="queue_unavailable") from exc
    return _started(execution, wait)


def _wait(body: dict) -> float:
    wait = body.get("wait", 0)
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= executions.MAX_WAIT_SECONDS:
        raise ApiError(
            422, "invalid fields", {"wait": f"must be a number of seconds from 0 to {executions.MAX_WAIT_SECONDS}"}
        )
    return wait


def _started(execution: Execution, wait: float):
    """202 with the queued run, or 200 with its outcome when it finished within `wait` seconds."""
    queued = execution_json(execution)
    try:
        if wait:
            executions.wait_for(execution, wait)
    except (OperationalError, InterfaceError):  # the run is queued; only our wait lost the database
        db.session.rollback()
        return queued, 202
    return execution_json(execution), 200 if executions.is_finished(execution) else 202


@bp.get("/scripts/<script_id>/executions")
@require("executions:read")
def list_executions(script_id: str):
    return page_of(executions_stmt(get_or_404(Script, script_id)), execution_json)


@bp.get("/executions/<execution_id>")
@require("executions:read")
def get_execution(execution_id: str):
    return execution_json(get_or_404(Execution, execution_id))
