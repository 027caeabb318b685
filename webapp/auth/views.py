"""Login, logout and the tenant switcher."""

from urllib.parse import urlsplit

from flask import Blueprint, abort, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import select

from webapp.auth import ratelimit
from webapp.auth.identity import SESSION_TENANT_KEY, user_memberships
from webapp.auth.passwords import DUMMY_HASH, verify_password
from webapp.client_address import client_address
from webapp.extensions import db
from webapp.models import User

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//") and not urlsplit(target).netloc:
        return target
    return url_for("dashboard.index")


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        if current_user.is_authenticated:
            return redirect(_safe_next(request.args.get("next")))
        return render_template("auth/login.html", email="", error=None)
    email = request.form.get("email", "").strip().lower()
    password = request.form.get("password", "")
    address = client_address(request) or "unknown"
    wait = ratelimit.begin_attempt(email, address)
    if wait:
        minutes = -(-wait // 60)
        message = f"Too many failed attempts. Try again in {minutes} minute{'s' if minutes != 1 else ''}."
        page = render_template("auth/login.html", email=email, error=message)
        return page, 429, {"Retry-After": str(wait)}
    user = db.session.scalar(select(User).where(User.email == email)) if email else None
    if not verify_password(user.password_hash if user else DUMMY_HASH, password) or user is None:
        return render_template("auth/login.html", email=email, error="Wrong email or password."), 401
    ratelimit.succeeded(email, address)
    session.clear()  # nothing from before the login survives it
    login_user(user)
    return redirect(_safe_next(request.args.get("next")))


@bp.post("/logout")
def logout():
    if current_user.is_authenticated:  # every session of the account ends, copies of the cookie too
        current_user.session_version += 1
        db.session.commit()
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))


@bp.post("/tenant")
@login_required
def switch_tenant():
    wanted = request.form.get("tenant_id", type=int)
    if not any(m.tenant_id == wanted for m in user_memberships(current_user)):
        abort(404)
    session[SESSION_TENANT_KEY] = wanted
    return redirect(url_for("dashboard.index"))
