"""Tenant administration: API tokens, members and invitations, usage, settings (admins only).

Admins never add an account directly, nor set anyone's password: they invite an address
(webapp/invitations), and only the platform CLI sets passwords for others.
"""

import secrets

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from redis.exceptions import RedisError
from sqlalchemy import func, update

from webapp import quotas, tenant_settings
from webapp.audit.log import member_target, record
from webapp.auth import tokens as token_service
from webapp.auth.identity import current_principal
from webapp.auth.roles import ROLES
from webapp.extensions import db
from webapp.invitations import service as invitations
from webapp.models import ApiToken, Invitation, Membership, User, utcnow
from webapp.permissions import require
from webapp.redis_client import get_redis
from webapp.tenancy import current_tenant, get_or_404, scoped

bp = Blueprint("admin", __name__)


# A token just made is shown once, on the page its form redirects to: its plaintext waits in
# Redis under a random reference that only this session holds (never in a cookie or a URL).
SHOWN_ONCE_KEY = "new_token"
SHOWN_ONCE_REDIS = "sr:token:shown-once:"  # + reference
SHOWN_ONCE_SECONDS = 60


def _tokens_page(
    new_token: str | None = None, errors: dict[str, str] | None = None, form: dict | None = None, status: int = 200
):
    tokens = db.session.scalars(scoped(ApiToken).order_by(ApiToken.revoked_at.is_not(None), ApiToken.created_at.desc()))
    page = render_template(
        "admin/tokens.html",
        tokens=list(tokens),
        new_token=new_token,
        errors=errors or {},
        form=form or {"role": token_service.DEFAULT_ROLE},
        roles=ROLES,
        now=utcnow(),
        max_expires_in_days=token_service.MAX_EXPIRES_IN_DAYS,
    )
    return page, status, {"Cache-Control": "no-store"}  # a new token is shown once: never cached


@bp.get("/tokens")
@require("tokens:manage")
def tokens():
    reference = session.pop(SHOWN_ONCE_KEY, None)
    new_token = None
    if reference:
        try:
            shown = get_redis().getdel(SHOWN_ONCE_REDIS + reference)
            new_token = shown.decode() if shown else None
        except RedisError:
            new_token = None  # the token exists; the admin revokes it and makes another
    return _tokens_page(new_token=new_token)


@bp.post("/tokens")
@require("tokens:manage")
def create_token():
    """Post/redirect/get: reloading the page that shows the new token makes no second one."""
    principal = current_principal()
    form = {key: request.form.get(key, "").strip() for key in ("name", "role", "expires_in_days")}
    try:
        days = token_service.parse_expires_in_days(form["expires_in_days"])
        _, plaintext = token_service.create_token(
            principal.tenant, principal.user, form["name"], form["role"] or None, days
        )
    except token_service.TokenError as exc:
        return _tokens_page(errors={exc.field: str(exc)}, form=form, status=422)
    reference = secrets.token_urlsafe(16)
    try:
        get_redis().set(SHOWN_ONCE_REDIS + reference, plaintext, ex=SHOWN_ONCE_SECONDS)
    except RedisError:
        return _tokens_page(new_token=plaintext)  # shown at once; a reload would post again
    session[SHOWN_ONCE_KEY] = reference
    return redirect(url_for("admin.tokens"), 303)


@bp.post("/tokens/<int:token_id>/revoke")
@require("tokens:manage")
def revoke_token(token_id: int):
    token_service.revoke(get_or_404(ApiToken, token_id))
    return redirect(url_for("admin.tokens"), 303)


def _members_page(
    errors: dict[str, str] | None = None, status: int = 200, form: dict | None = None, created: dict | None = None
):
    members = db.session.scalars(scoped(Membership).join(User).order_by(User.email))
    pending = db.session.scalars(
        scoped(Invitation).where(invitations.pending_clause(utcnow())).order_by(Invitation.created_at.desc())
    )
    page = render_template(
        "admin/members.html",
        members=list(members),
        invitations=list(pending),
        errors=errors or {},
        roles=ROLES,
        form=form or {},
        created=created,
    )
    return page, status


@bp.get("/members")
@require("members:manage")
def members():
    return _members_page()


@bp.post("/members/invitations")
@require("members:manage")
def create_invitation():
    """The same answer whether or not the address has an account anywhere (docs/members.md)."""
    principal = current_principal()
    form = {"email": request.form.get("email", "").strip(), "role": request.form.get("role", "")}
    try:
        invitation, plaintext, replaced = invitations.invite(
            principal.tenant, principal.user, form["email"], form["role"]
        )
    except invitations.InvitationError as exc:
        return _members_page(exc.fields, 422, form)
    created = {
        "invitation": invitation,
        "link": url_for("invitations.invitation", token=plaintext, _external=True),
        "replaced": replaced,
    }
    page, status = _members_page(status=201, created=created)
    return page, status, {"Cache-Control": "no-store"}  # the link is shown once: never cached


@bp.post("/members/invitations/<int:invitation_id>/revoke")
@require("members:manage")
def revoke_invitation(invitation_id: int):
    invitations.revoke(get_or_404(Invitation, invitation_id))
    return redirect(url_for("admin.members"), 303)


def _admin_count() -> int:
    return db.session.scalar(scoped(Membership).with_only_columns(func.count()).where(Membership.role == "admin")) or 0


@bp.post("/members/<int:membership_id>/role")
@require("members:manage")
def change_role(membership_id: int):
    membership = get_or_404(Membership, membership_id)
    role = request.form.get("role", "")
    if role not in ROLES:
        return _members_page({"role": f"must be one of {', '.join(ROLES)}"}, 422)
    if membership.role == "admin" and role != "admin" and _admin_count() <= 1:
        return _members_page({"role": "the tenant must keep at least one admin"}, 422)
    if membership.role != role:
        summary = {"role": {"old": membership.role, "new": role}}
        record(membership.tenant_id, "member.update", member_target(membership.user), summary)
        membership.role = role
        db.session.commit()
    return redirect(url_for("admin.members"), 303)


@bp.post("/members/<int:membership_id>/remove")
@require("members:manage")
def remove_member(membership_id: int):
    membership = get_or_404(Membership, membership_id)
    if membership.role == "admin" and _admin_count() <= 1:
        return _members_page({"remove": "the tenant must keep at least one admin"}, 422)
    # Their tokens in this tenant end with the membership: one handed to a CI system must not
    # come back to life if the person is invited again.
    revoked = db.session.execute(
        update(ApiToken)
        .where(
            ApiToken.tenant_id == membership.tenant_id,
            ApiToken.user_id == membership.user_id,
            ApiToken.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    ).rowcount
    summary = {"role": {"old": membership.role, "new": None}, "tokens_revoked": revoked}
    record(membership.tenant_id, "member.remove", member_target(membership.user), summary)
    db.session.delete(membership)
    db.session.commit()
    return redirect(url_for("admin.members"), 303)


@bp.get("/usage")
@require("usage:read")
def usage():
    return render_template("admin/usage.html", report=quotas.report(current_tenant().id))


def _settings_page(errors: dict[str, str] | None = None, form: dict | None = None):
    hosts = current_tenant().fetch_allowed_hosts
    if form is None:
        form = {"fetch": "any" if hosts is None else "only", "hosts": "\n".join(hosts or ())}
    page = render_template("admin/settings.html", form=form, errors=errors or {}, max_hosts=tenant_settings.MAX_HOSTS)
    return page, 422 if errors else 200


@bp.get("/settings")
@require("settings:manage")
def settings():
    return _settings_page()


@bp.post("/settings")
@require("settings:manage")
def update_settings():
    form = {"fetch": request.form.get("fetch", ""), "hosts": request.form.get("hosts", "")}
    if form["fetch"] not in ("any", "only"):
        return _settings_page({"fetch": "choose whether scripts may fetch any public host or only these"}, form)
    try:
        hosts = tenant_settings.hosts_from_text(form["hosts"]) if form["fetch"] == "only" else None
    except tenant_settings.SettingsInvalid as exc:
        return _settings_page(exc.fields, form)
    if tenant_settings.update(current_tenant().id, hosts):
        flash(_saved(hosts))
    else:
        flash("Nothing changed: these were already the settings.")
    return redirect(url_for("admin.settings"), 303)


def _saved(hosts: list[str] | None) -> str:
    if hosts is None:
        return "Saved: scripts may fetch any public host."
    if not hosts:
        return "Saved: scripts may not fetch at all."
    return f"Saved: scripts may fetch only {len(hosts)} host pattern{'s' if len(hosts) != 1 else ''}."
