"""The /secrets page: add, replace and delete a tenant's secrets; values are never shown."""

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from webapp.auth.identity import current_principal
from webapp.extensions import db
from webapp.models import Secret
from webapp.permissions import can, require
from webapp.secret_store import service
from webapp.tenancy import current_tenant, scoped

bp = Blueprint("secrets", __name__)


def _page(errors: dict[str, str] | None = None, form: dict | None = None, failed: str | None = None):
    """The page; `failed` names the secret whose replace form holds `errors`. The value typed is
    never sent back: a refused form is filled in again."""
    secrets = list(db.session.scalars(scoped(Secret).order_by(Secret.name)))
    status = 422 if errors else 200
    page = render_template(
        "secrets/index.html",
        secrets=secrets,
        writable=can("secrets:write"),
        errors=errors or {},
        form=form or {},
        failed=failed,
        max_kib=service.MAX_VALUE_BYTES // 1024,
    )
    return page, status, {"Cache-Control": "no-store"}


@bp.get("/secrets")
@require("secrets:read")
def index():
    return _page()


@bp.post("/secrets")
@require("secrets:write")
def create():
    name = request.form.get("name", "").strip()
    try:
        service.check_name(name)
        if service.find(current_tenant().id, name) is not None:
            raise service.SecretInvalid({"name": f"{name} exists already: replace it in the list below"})
        service.put(current_tenant().id, name, request.form.get("value", ""), current_principal().user.id)
    except service.SecretInvalid as exc:
        return _page(exc.fields, {"name": name})
    flash(f"Secret {name} saved. Its value cannot be shown again.")
    return redirect(url_for("secrets.index"), 303)


@bp.post("/secrets/<name>")
@require("secrets:write")
def replace(name: str):
    if service.find(current_tenant().id, name) is None:
        abort(404)
    try:
        service.put(current_tenant().id, name, request.form.get("value", ""), current_principal().user.id)
    except service.SecretInvalid as exc:
        return _page(exc.fields, failed=name)
    flash(f"Secret {name} replaced. The next runs read the new value.")
    return redirect(url_for("secrets.index"), 303)


@bp.post("/secrets/<name>/delete")
@require("secrets:write")
def delete(name: str):
    if not service.remove(current_tenant().id, name):
        abort(404)
    flash(f"Secret {name} deleted. Scripts now read null for it.")
    return redirect(url_for("secrets.index"), 303)
