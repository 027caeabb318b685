"""The script form's "Run draft" panel (htmx): runs the editor's source once, unsaved, and shows
the outcome in place with executions/_run_result.html, as the script page's Run panel does.

An edit page's draft is an execution of its script (trigger `draft`); the new page's, before
the script exists, an ephemeral run (webapp/executions/drafts.py). Both take their sample from
the panel's fields (`sample_from_form`) and their event from `draft_event`.
"""

import json
from typing import Any
from urllib.parse import parse_qs, urlencode

from flask import Blueprint, abort, current_app, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from webapp.auth.identity import current_principal
from webapp.executions import drafts
from webapp.executions.service import QueueUnavailable, start_run, wait_for
from webapp.executions.views import RUN_WAIT_SECONDS, parse_params
from webapp.limits import LIMIT_LABELS, limits_message, own_limits
from webapp.models import Script
from webapp.permissions import require
from webapp.scripts.fields import SCRIPT_TYPES
from webapp.scripts.forms import form_data
from webapp.scripts.validation import draft_source_problem, path_params
from webapp.tenancy import get_or_404

bp = Blueprint("drafts", __name__)
LONG_POLL_SECONDS = 10


def sample_fields(script_type: str, path: str | None, form: MultiDict | dict) -> dict[str, Any]:
    """scripts/_draft_sample.html's context: the type's sample fields and what is typed in them."""
    names = path_params(path or "") if script_type == "endpoint" else []
    return {
        "sample_type": script_type,
        "sample_params": [(name, form.get(f"draft_param_{name}", "")) for name in names],
        "sample": {key: form.get(f"draft_{key}", "") for key in ("params", "query", "body")},
    }


def typed_sample(script_type: str, sample: dict[str, Any]) -> dict[str, str]:
    """The panel's fields filled in with a sample (an example's): sample_from_form's inverse."""
    if script_type == "endpoint":
        typed = {f"draft_param_{name}": str(value) for name, value in sample.get("params", {}).items()}
        typed["draft_query"] = urlencode(sample.get("query", {}), doseq=True)
        if "json" in sample:
            typed["draft_body"] = json.dumps(sample["json"])
        return typed
    return {"draft_params": json.dumps(sample)} if script_type == "manual" else {}


def sample_from_form(script_type: str, path: str | None, form: MultiDict) -> tuple[dict[str, Any], str | None]:
    """The draft's sample as the panel's fields give it, or why they are refused."""
    if script_type == "cron":
        return {}, None
    if script_type != "endpoint":
        params, problem = parse_params(form.get("draft_params", ""))
        return params, f"Sample parameters {problem}" if problem else None
    sample: dict[str, Any] = {
        "params": {name: form.get(f"draft_param_{name}", "").strip() for name in path_params(path or "")},
        "query": {k: v[0] if len(v) == 1 else v for k, v in parse_qs(form.get("draft_query", "").lstrip("?")).items()},
    }
    body = form.get("draft_body", "").strip()
    if body:
        try:
            sample["json"] = json.loads(body)
        except ValueError as exc:
            return {}, f"JSON body is not valid JSON: {exc}"
    return sample, None


def _refused(message: str):
    return render_template("executions/_run_result.html", refused=message)


def _wait() -> int:
    return current_app.config.get("RUN_WAIT_SECONDS", RUN_WAIT_SECONDS)


@bp.post("/scripts/<script_id>/draft")
@require("scripts:write")
def run_saved(script_id: str):
    """The edit page's draft: the script's type, limits, method and path; the editor's source."""
    script = get_or_404(Script, script_id)
    source = form_data(request.form).get("source")
    problem = draft_source_problem(source)
    if problem:
        return _refused(f"Source {problem}.")
    sample, problem = sample_from_form(script.type, script.endpoint_path, request.form)
    if problem:
        return _refused(problem)
    event = drafts.draft_event(script.type, sample, script.endpoint_method, script.endpoint_path)
    try:
        execution = start_run(script, "draft", event, current_principal().user, source=source)
    except QueueUnavailable as exc:
        return _refused(f"{exc}. Nothing ran; try again in a moment.")
    wait_for(execution, _wait())
    return render_template("executions/_run_result.html", execution=execution, backoff=False)


@bp.post("/scripts/draft")
@require("scripts:write")
def run_unsaved():
    """The new page's draft: everything from the form, nothing recorded."""
    data = form_data(request.form)
    script_type = data.get("type") if data.get("type") in SCRIPT_TYPES else "manual"
    problem = draft_source_problem(data.get("source"))
    if problem:
        return _refused(f"Source {problem}.")
    limits, problem = own_limits(data.get("limits"), current_app.config["SETTINGS"].limits)
    if problem:
        return _refused(f"Limits: {limits_message(problem, LIMIT_LABELS)}.")
    path = (data.get("endpoint_path") or "").strip() or None
    sample, problem = sample_from_form(script_type, path, request.form)
    if problem:
        return _refused(problem)
    event = drafts.draft_event(script_type, sample, data.get("endpoint_method"), path)
    principal = current_principal()
    script = {"name": data.get("name"), "type": script_type, "source": data["source"]}
    try:
        job_id = drafts.start_ephemeral(principal.tenant, principal.user, script, event, limits)
    except QueueUnavailable as exc:
        return _refused(f"{str(exc).capitalize()}. Nothing ran; try again in a moment.")
    return _ephemeral_partial(job_id, _wait())


@bp.get("/scripts/draft/<job_id>/result")
@require("scripts:write")
def unsaved_result(job_id: str):
    """Long-poll: the new page's draft outcome once it has one, or after ?wait= (≤ 10) s."""
    wait = max(0, min(request.args.get("wait", default=0, type=int) or 0, LONG_POLL_SECONDS))
    return _ephemeral_partial(job_id, wait)


def _ephemeral_partial(job_id: str, wait: float):
    outcome = drafts.ephemeral_outcome(job_id, current_principal().tenant, wait)
    if outcome is None:
        abort(404)
    poll = url_for("drafts.unsaved_result", job_id=job_id, wait=LONG_POLL_SECONDS)
    return render_template("executions/_run_result.html", execution=outcome, result_url=poll, backoff=False)


@bp.post("/scripts/draft-sample")
@require("scripts:write")
def sample():
    """htmx: the new page's sample fields for the type and path typed so far."""
    data = form_data(request.form)
    script_type = data.get("type") if data.get("type") in SCRIPT_TYPES else "manual"
    fields = sample_fields(script_type, data.get("endpoint_path"), request.form)
    return render_template("scripts/_draft_sample.html", live=True, **fields)


bp.add_app_template_filter(drafts.error_line, "error_line")
