"""Login, logout, one's own account (password), and choosing the tenant to act in
(docs/members.md)."""

from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import select

from webapp.audit.log import record_in_users_tenants
from webapp.auth import ratelimit
from webapp.auth.identity import SESSION_TENANT_KEY, session_membership, user_memberships
from webapp.auth.passwords import DUMMY_HASH, MIN_LENGTH, new_password_errors, set_password, verify_password
from webapp.client_address import client_address
from webapp.extensions import db
from webapp.models import User

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    local = target and target.startswith("/") and not target.startswith("//") and not urlsplit(target).netloc
    if local and "\\" not in target:  # browsers read "/\\host" as "//host"
        return target
    return url_for("dashboard.index")


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        if current_user.is_authenticated:
            return redirect(_safe_next(request.args.get("next")))
        return render_template("auth/login.html", email=request.args.get("email", "")[:254], error=None)
    email = request.form.get("email", "").strip().lower()
    password = request.form.get("password", "")
    address = client_address(request) or "unknown"
    wait = ratelimit.begin_attempt(email, address)
    if wait:
        page = render_template("auth/login.html", email=email, error=_locked_message(wait))
        return page, 429, {"Retry-After": str(wait)}
    user = db.session.scalar(select(User).where(User.email == email)) if email else None
    if not verify_password(user.password_hash if user else DUMMY_HASH, password) or user is None:
        if user is not None:  # an unknown address belongs to no tenant: nothing is recorded
            record_in_users_tenants(user, "login.failure", {"reason": "wrong password"})
            db.session.commit()
        return render_template("auth/login.html", email=email, error="Wrong email or password."), 401
    ratelimit.succeeded(email, address)
    session.clear()  # nothing from before the login survives it
    login_user(user)
    record_in_users_tenants(user, "login.success")
    db.session.commit()
    return redirect(_safe_next(request.args.get("next")))


def _locked_message(wait: int) -> str:
    minutes = -(-wait // 60)
    return f"Too many failed attempts. Try again in {minutes} minute{'s' if minutes != 1 else ''}."


def _account_page(errors: dict[str, str] | None = None, status: int = 200, headers: dict | None = None):
    page = render_template("auth/account.html", errors=errors or {}, min_length=MIN_LENGTH)
    return page, status, headers or {}


@bp.get("/account")
@login_required
def account():
    return _account_page()


@bp.post("/account")
@login_required
def change_password():
    """A new password ends every other session of the account; this one stays logged in.
    A wrong current password counts as a failed login (webapp/auth/ratelimit.py)."""
    user, address = current_user._get_current_object(), client_address(request) or "unknown"
    current = request.form.get("current", "")
    new = request.form.get("password", "")
    errors = new_password_errors(new, request.form.get("confirm", ""))
    if not current:
        errors["current"] = "Enter your current password."
    else:
        wait = ratelimit.begin_attempt(user.email, address)
        if wait:
            return _account_page({"current": _locked_message(wait)}, 429, {"Retry-After": str(wait)})
        if not verify_password(user.password_hash, current):
            errors["current"] = "That is not your current password."
        else:
            ratelimit.succeeded(user.email, address)
    if errors:
        return _account_page(errors, 422)
    set_password(user, new)
    db.session.commit()
    login_user(user)  # this session carries the new session version: it alone stays
    flash("Your password was changed. Your other sessions were logged out.")
    return redirect(url_for("auth.account"), 303)


@bp.post("/logout")
def logout():
    if current_user.is_authenticated:  # every session of the account ends, copies of the cookie too
        current_user.end_sessions()
        record_in_users_tenants(current_user._get_current_object(), "logout")
        db.session.commit()
    logout_user()
    session.clear()
    target = request.form.get("next")  # e.g. back to an invitation meant for another account
    return redirect(_safe_next(target) if target else url_for("auth.login"))


@bp.get("/tenant")
@login_required
def choose_tenant():
    """Where a user who belongs to several tenants, and has used none yet, picks one."""
    memberships = user_memberships(current_user)
    if not memberships:
        return render_template("no_tenant.html"), 403
    current = session_membership(current_user)
    return render_template(
        "auth/choose_tenant.html",
        memberships=memberships,
        current=current.tenant_id if current else None,
        next=request.args.get("next", ""),
    )


@bp.post("/tenant")
@login_required
def switch_tenant():
    wanted = request.form.get("tenant_id", type=int)
    if not any(m.tenant_id == wanted for m in user_memberships(current_user)):
        abort(404)
    session[SESSION_TENANT_KEY] = wanted
    current_user.last_tenant_id = wanted  # the next login lands here
    db.session.commit()
    return redirect(_safe_next(request.form.get("next")))
