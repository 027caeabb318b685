"""Who is calling, in which tenant, with which role: resolved once per request.

A caller is either a Bearer API token or a logged-in session with its current tenant.
"""

from flask import Flask, g, request, session
from flask_login import current_user
from sqlalchemy import select

from webapp.auth.principal import Caller, Principal
from webapp.auth.tokens import authenticate, cached_caller
from webapp.extensions import db, login_manager
from webapp.models import Membership, Tenant, User

SESSION_TENANT_KEY = "tenant_id"
TOKEN_PATHS = ("/api/v1/", "/api/scripts")  # where a Bearer token is a caller


def init_app(app: Flask) -> None:
    login_manager.user_loader(_load_user)
    login_manager.login_view = "auth.login"
    login_manager.login_message = None
    login_manager.session_protection = "strong"


def _load_user(session_id: str) -> User | None:
    """The user of a session cookie ("id:session_version"), unless that session was ended."""
    user_id, _, version = session_id.partition(":")
    if not (user_id.isdigit() and version.isdigit()):
        return None
    user = db.session.get(User, int(user_id))
    return user if user is not None and user.session_version == int(version) else None


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def current_principal() -> Principal | None:
    if "principal" not in g:
        g.principal = _resolve()
    return g.principal


def current_caller(auth_version: bytes | None) -> Caller | None:
    """The caller of an endpoint: a Bearer token's from this process's cache (see
    webapp.auth.tokens.CallerCache; `auth_version` is the one read for this request, None when
    unknown), a session's as for any page."""
    token = bearer_token()
    if token is not None:
        return cached_caller(token, auth_version)
    principal = current_principal()
    return Caller.of(principal) if principal else None


def _resolve() -> Principal | None:
    # A token opens the API (REST and endpoint calls) and nothing else: with one, the HTML
    # forms (tokens, members) would let a short-lived token mint lasting access (docs/api.md).
    token = bearer_token() if request.path.startswith(TOKEN_PATHS) else None
    if token is not None:
        return authenticate(token)
    if not current_user.is_authenticated:
        return None
    chosen = session_membership(current_user)
    if chosen is None:
        return None
    return Principal(user=current_user._get_current_object(), tenant=chosen.tenant, role=chosen.role)


def session_membership(user: User) -> Membership | None:
    """The membership a session acts in: the tenant chosen in this session, else the user's
    last-used tenant, else their only one. None when they belong to several and have not
    chosen (they are asked: webapp/auth/views.py's chooser), or to none."""
    memberships = user_memberships(user)
    by_tenant = {m.tenant_id: m for m in memberships}
    for wanted in (session.get(SESSION_TENANT_KEY), user.last_tenant_id):
        if wanted in by_tenant:
            return by_tenant[wanted]
    return memberships[0] if len(memberships) == 1 else None


def must_choose_tenant(user: User) -> bool:
    """Logged in, a member of several tenants, and none chosen yet."""
    return len(user_memberships(user)) > 1 and session_membership(user) is None


def user_memberships(user: User) -> list[Membership]:
    stmt = select(Membership).join(Tenant).where(Membership.user_id == user.id).order_by(Tenant.name)
    return list(db.session.scalars(stmt))
