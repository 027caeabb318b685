"""Script pages: list, create, edit (with its cron preview), detail, enable/disable, delete, versions
and rollback."""

import difflib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from webapp import cron, htmx
from webapp.audit.queries import version_entries
from webapp.auth.identity import current_principal
from webapp.executions.draft_views import sample_fields, typed_sample
from webapp.limits import LIMIT_LABELS
from webapp.models import Script
from webapp.permissions import can, require
from webapp.scripts import service
from webapp.scripts.duplicate import duplicate_values
from webapp.scripts.examples import BY_KEY, EXAMPLES
from webapp.scripts.fields import HTTP_METHODS, SCRIPT_STATUSES, SCRIPT_TYPES, VERSIONED_FIELDS
from webapp.scripts.forms import form_data, form_errors, initial_values
from webapp.scripts.queries import BadPaging, paginate, paging_args, scripts_stmt, versions_stmt
from webapp.scripts.schedule_info import cron_status, latest_executions, schedule_facts, script_page
from webapp.scripts.starters import after_type_switch
from webapp.scripts.validation import ValidationFailed
from webapp.tenancy import get_or_404

bp = Blueprint("scripts", __name__)
PER_PAGE = 20


@bp.get("/scripts")
@require("scripts:read")
def index():
    type_ = request.args.get("type") if request.args.get("type") in SCRIPT_TYPES else None
    status = request.args.get("status") if request.args.get("status") in SCRIPT_STATUSES else None
    search = request.args.get("q", "").strip()
    try:
        page, _ = paging_args(request.args)
    except BadPaging:
        page = 1
    result = paginate(scripts_stmt(type_, status, search), page, PER_PAGE)
    filters = {"type": type_ or "", "status": status or "", "q": search}
    schedules = cron_status(result.items)
    template = "scripts/_table.html" if htmx.target() == "script-table" else "scripts/index.html"
    return render_template(template, page=result, filters=filters, schedules=schedules)


def _form_page(
    script: Script | None,
    values: dict[str, Any],
    errors: dict[str, str],
    status: int = 200,
    typed: Mapping[str, str] | None = None,
    example: str | None = None,
):
    """The form, its draft panel (an edit page drafts as the saved script's type; the new page
    as the form's) with what `typed` fills in, and on the new page the examples gallery."""
    draft_type = script.type if script else values.get("type") or "manual"
    draft_path = script.endpoint_path if script else values.get("endpoint_path")
    typed = typed if typed is not None else request.form
    return (
        render_template(
            "scripts/form.html",
            script=script,
            values=values,
            errors=errors,
            types=SCRIPT_TYPES,
            methods=HTTP_METHODS,
            limit_labels=LIMIT_LABELS,
            examples=EXAMPLES,
            example=example,
            live=script is None,
            **sample_fields(draft_type, draft_path, typed),
            **_cron_preview(values),
        ),
        status,
    )


def _save(script: Script | None):
    data = form_data(request.form)
    if request.form.get("action") == "refresh":  # no-JS path: redraw the fields for the chosen type
        values = {**initial_values(script), **data}
        values["source"] = after_type_switch(values.get("source"), values.get("type"))
        return _form_page(script, values, {})
    user = current_principal().user
    try:
        if script is None:
            script = service.create_script(current_principal().tenant, user, data)
            flash(f"Script “{script.name}” created.")
        else:
            version, updated_at = script.version, script.updated_at
            service.update_script(script, user, data)
            flash(_saved(script, version, updated_at))
    except ValidationFailed as exc:
        status = 422 if exc.status == 422 else 409
        return _form_page(script, {**initial_values(script), **data}, form_errors(exc), status)
    return redirect(url_for("scripts.detail", script_id=script.id), 303)


def _saved(script: Script, version: int, updated_at: datetime | None) -> str:
    if script.version != version:
        return f"Saved: version {script.version}."
    if script.updated_at != updated_at:
        return "Saved; the version is unchanged."
    return "Nothing to save: no field changed."


@bp.route("/scripts/new", methods=["GET", "POST"])
@require("scripts:write")
def new():
    if request.method == "POST":
        return _save(None)
    example = BY_KEY.get(request.args.get("example", ""))
    if example is not None:
        values = {**initial_values(None, example.fields["type"]), **example.fields}
        return _form_page(
            None, values, {}, typed=typed_sample(example.fields["type"], example.sample), example=example.key
        )
    return _form_page(None, _new_values(), {})


def _new_values() -> dict[str, Any]:
    """The new-script form's first values: a copy of ?duplicate=<id> (one of the tenant's
    scripts, else 404), or the starter of ?type=."""
    if duplicate := request.args.get("duplicate"):
        return duplicate_values(get_or_404(Script, duplicate))
    type_ = request.args.get("type")
    return initial_values(None, type_ if type_ in SCRIPT_TYPES else "manual")


@bp.route("/scripts/<script_id>/edit", methods=["GET", "POST"])
@require("scripts:write")
def edit(script_id: str):
    script = get_or_404(Script, script_id)
    if request.method == "POST":
        return _save(script)
    return _form_page(script, initial_values(script), {})


@bp.post("/scripts/trigger-fields")
@require("scripts:write")
def trigger_fields():
    """htmx: the cron or endpoint fields for the type chosen in the form, and that type's
    starter source while the form's source is still an untouched starter. A POST, as the
    form's source may be longer than a URL may be."""
    values = {**initial_values(None), **form_data(request.form)}
    sent = values["source"] if "source" in request.form else None
    switched = after_type_switch(sent, values.get("type")) if sent is not None else None
    return render_template(
        "scripts/_trigger_fields.html",
        values=values,
        errors={},
        methods=HTTP_METHODS,
        starter_source=switched if switched != sent else None,
        **_cron_preview(values),
    )


@bp.get("/scripts/cron-preview")
@require("scripts:read")
def cron_preview():
    """htmx: the form's preview of the cron expression and timezone typed."""
    return render_template("scripts/_cron_preview.html", **_cron_preview(request.args))


def _cron_preview(values: Mapping[str, Any]) -> dict[str, Any]:
    """scripts/_cron_preview.html's context: what the expression means and when it fires next
    in the timezone (UTC when none is given); no preview before an expression is typed."""
    expression = str(values.get("cron_expression") or "").strip()
    timezone = str(values.get("timezone") or "").strip() or "UTC"
    return {"preview": cron.describe(expression, timezone) if expression else None, "timezone": timezone}


@bp.get("/scripts/<script_id>")
@require("scripts:read")
def detail(script_id: str):
    script = get_or_404(Script, script_id)
    return render_template("scripts/detail.html", script=script, **script_page(script))


@bp.get("/scripts/<script_id>/latest-executions")
@require("executions:read")
def latest(script_id: str):
    """htmx: the script page's "Latest executions", polled."""
    script = get_or_404(Script, script_id)
    return render_template("scripts/_latest_executions.html", script=script, executions=latest_executions(script))


@bp.get("/scripts/<script_id>/schedule")
@require("scripts:read")
def schedule(script_id: str):
    """htmx: a cron script page's next, last and upcoming fires, polled. Nothing (204, which
    htmx leaves in place) once the script is no longer a cron script."""
    script = get_or_404(Script, script_id)
    if script.type != "cron":
        return "", 204
    return render_template("scripts/_schedule.html", script=script, **schedule_facts(script))


@bp.post("/scripts/<script_id>/status")
@require("scripts:write")
def set_status(script_id: str):
    script = get_or_404(Script, script_id)
    status = request.form.get("status")
    if status not in SCRIPT_STATUSES:
        abort(400, f"status must be one of {', '.join(SCRIPT_STATUSES)}")
    service.set_status(script, current_principal().user, status)
    flash(f"Script “{script.name}” {'enabled' if status == 'active' else 'disabled'}.")
    if htmx.is_htmx():  # the confirmation goes into the page's live region, out of band
        return render_template("scripts/_status.html", script=script) + render_template("_flashes.html", oob=True)
    return redirect(url_for("scripts.detail", script_id=script.id), 303)


@bp.route("/scripts/<script_id>/delete", methods=["GET", "POST"])
@require("scripts:write")
def delete(script_id: str):
    script = get_or_404(Script, script_id)
    if request.method == "GET":
        return render_template("scripts/delete.html", script=script)
    if request.form.get("confirm_name", "").strip() != script.name:
        return render_template("scripts/delete.html", script=script, error="Type the script's name to confirm."), 422
    name = script.name  # the row is gone after the delete
    service.delete_script(script)
    flash(f"Script “{name}” deleted.")
    if htmx.is_htmx():
        return htmx.redirect(url_for("scripts.index"))
    return redirect(url_for("scripts.index"), 303)


@bp.get("/scripts/<script_id>/versions")
@require("scripts:read")
def versions(script_id: str):
    script = get_or_404(Script, script_id)
    shown = list(paginate(versions_stmt(script), 1, 500).items)
    # Where each version was saved from is the audit log's, shown to those who may read it.
    entries = version_entries(str(script.id), [v.version for v in shown]) if can("audit:read") else {}
    return render_template("scripts/versions.html", script=script, versions=shown, entries=entries)


@bp.get("/scripts/<script_id>/versions/<int:number>")
@require("scripts:read")
def version(script_id: str, number: int):
    script = get_or_404(Script, script_id)
    shown = service.version_of(script, number) or abort(404)
    against_number = request.args.get("against", type=int) or max(number - 1, 0)
    against = service.version_of(script, against_number) if against_number else None
    return render_template(
        "scripts/version.html",
        script=script,
        shown=shown,
        against=against,
        diff=source_diff(against.source if against else "", shown.source, against_number, number),
        settings=settings_diff(against, shown),
        all_versions=[v.version for v in paginate(versions_stmt(script), 1, 500).items],
    )


@bp.post("/scripts/<script_id>/versions/<int:number>/rollback")
@require("scripts:write")
def rollback(script_id: str, number: int):
    script = get_or_404(Script, script_id)
    version = script.version
    try:
        service.rollback(script, current_principal().user, number)
    except ValidationFailed as exc:
        message = "; ".join(f"{k}: {v}" for k, v in exc.fields.items())
        return render_template("error.html", status=exc.status, message=f"Cannot roll back: {message}"), exc.status
    if script.version == version:
        flash(f"Nothing to roll back: version {version} already has the source and settings of version {number}.")
    else:
        flash(f"Rolled back: version {script.version} has the source and settings of version {number}.")
    return redirect(url_for("scripts.detail", script_id=script.id), 303)


def source_diff(old: str, new: str, old_number: int, new_number: int) -> list[tuple[str, str]]:
    """Unified diff lines tagged add/del/hunk/ctx for the template."""
    lines = difflib.unified_diff(
        old.splitlines(), new.splitlines(), f"version {old_number}", f"version {new_number}", lineterm=""
    )
    tagged = []
    for line in lines:
        kind = (
            "hunk"
            if line.startswith("@@")
            else "meta"
            if line[:3] in ("---", "+++")
            else {"+": "add", "-": "del"}.get(line[:1], "ctx")
        )
        tagged.append((kind, line))
    return tagged


def settings_diff(old: Any, new: Any) -> list[tuple[str, Any, Any]]:
    fields = [f for f in VERSIONED_FIELDS if f != "source"]
    return [
        (f, getattr(old, f) if old else None, getattr(new, f))
        for f in fields
        if old is None or getattr(old, f) != getattr(new, f)
    ]
