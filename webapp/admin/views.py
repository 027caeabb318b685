"""Tenant administration: API tokens and members (admins only)."""

from flask import Blueprint, redirect, render_template, request, url_for
from sqlalchemy import func, select

from webapp.auth import tokens as token_service
from webapp.auth.identity import current_principal
from webapp.auth.passwords import MIN_LENGTH, hash_password
from webapp.cli import EMAIL
from webapp.extensions import db
from webapp.models import ROLES, ApiToken, Membership, User
from webapp.permissions import require
from webapp.tenancy import current_tenant, get_or_404, scoped

bp = Blueprint("admin", __name__)


def _tokens_page(new_token: str | None = None, errors: dict[str, str] | None = None, status: int = 200):
    tokens = db.session.scalars(scoped(ApiToken).order_by(ApiToken.revoked_at.is_not(None), ApiToken.created_at.desc()))
    return render_template(
        "admin/tokens.html", tokens=list(tokens), new_token=new_token, errors=errors or {}, roles=ROLES
    ), status


@bp.get("/tokens")
@require("tokens:manage")
def tokens():
    return _tokens_page()


@bp.post("/tokens")
@require("tokens:manage")
def create_token():
    principal = current_principal()
    try:
        _, plaintext = token_service.create_token(
            principal.tenant, principal.user, request.form.get("name", ""), request.form.get("role") or None
        )
    except token_service.TokenError as exc:
        return _tokens_page(errors={"role": str(exc)}, status=422)
    page, status = _tokens_page(new_token=plaintext, status=201)
    return page, status, {"Cache-Control": "no-store"}  # the token is shown once: never cached


@bp.post("/tokens/<int:token_id>/revoke")
@require("tokens:manage")
def revoke_token(token_id: int):
    token_service.revoke(get_or_404(ApiToken, token_id))
    return redirect(url_for("admin.tokens"), 303)


def _members_page(errors: dict[str, str] | None = None, status: int = 200, form: dict | None = None):
    members = db.session.scalars(scoped(Membership).join(User).order_by(User.email))
    return render_template(
        "admin/members.html", members=list(members), errors=errors or {}, roles=ROLES, form=form or {}
    ), status


@bp.get("/members")
@require("members:manage")
def members():
    return _members_page()


@bp.post("/members")
@require("members:manage")
def add_member():
    email = request.form.get("email", "").strip().lower()
    role = request.form.get("role", "")
    password = request.form.get("password", "")
    form = {"email": email, "role": role}
    errors: dict[str, str] = {}
    if not EMAIL.match(email) or len(email) > 254:
        errors["email"] = "is not an email address"
    if role not in ROLES:
        errors["role"] = f"must be one of {', '.join(ROLES)}"
    user = db.session.scalar(select(User).where(User.email == email))
    if user is None and len(password) < MIN_LENGTH and "email" not in errors:
        errors["password"] = f"a new user needs a password of at least {MIN_LENGTH} characters"
    if user is not None and db.session.scalar(scoped(Membership).where(Membership.user_id == user.id)):
        errors["email"] = "is already a member"
    if errors:
        return _members_page(errors, 422, form)
    if user is None:
        user = User(email=email, password_hash=hash_password(password))
        db.session.add(user)
    db.session.add(Membership(user=user, tenant_id=current_tenant().id, role=role))
    db.session.commit()
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
    membership.role = role
    db.session.commit()
    return redirect(url_for("admin.members"), 303)


@bp.post("/members/<int:membership_id>/remove")
@require("members:manage")
def remove_member(membership_id: int):
    membership = get_or_404(Membership, membership_id)
    if membership.role == "admin" and _admin_count() <= 1:
        return _members_page({"remove": "the tenant must keep at least one admin"}, 422)
    db.session.delete(membership)
    db.session.commit()
    return redirect(url_for("admin.members"), 303)
