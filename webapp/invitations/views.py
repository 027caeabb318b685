"""`/invitations/<token>`: the link an admin hands to the person they invite (docs/members.md).

Reachable anonymously: the token is the credential. What the page offers depends on who opens
it: the invited address's account accepts; another account is told the link is for another
address (and nothing more); an anonymous visitor may log in or create the account. The
anonymous page is the same whether or not the address has an account, so that opening a link
one made oneself does not tell an admin which addresses have accounts.
"""

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user

from webapp.auth.identity import SESSION_TENANT_KEY
from webapp.auth.passwords import MIN_LENGTH, new_password_errors
from webapp.invitations import service
from webapp.models import Invitation

bp = Blueprint("invitations", __name__)
NO_STORE = {"Cache-Control": "no-store"}
ROLE_HELP = {
    "viewer": "Viewers read scripts and executions, and call endpoints.",
    "editor": "Editors also create, edit, run, enable, disable and delete scripts.",
    "admin": "Admins also manage members and API tokens.",
}


def _invalid():
    return render_template("invitations/invalid.html"), 404, NO_STORE


@bp.route("/invitations/<token>", methods=["GET", "POST"])
def invitation(token: str):
    found = service.find_pending(token)
    if found is None:
        return _invalid()
    if current_user.is_authenticated:
        if current_user.email != found.email:
            return render_template("invitations/other_address.html", token=token), 403, NO_STORE
        if request.method == "POST":
            return _accept(found)
        page = render_template("invitations/accept.html", invitation=found, token=token, role_help=ROLE_HELP)
        return page, 200, NO_STORE
    if request.method == "POST":
        return _create_account(found, token)
    return _join_page(found, token)


def _join_page(invitation: Invitation, token: str, errors: dict[str, str] | None = None, status: int = 200):
    page = render_template(
        "invitations/join.html",
        invitation=invitation,
        token=token,
        errors=errors or {},
        min_length=MIN_LENGTH,
        role_help=ROLE_HELP,
        login_url=url_for("auth.login", next=url_for("invitations.invitation", token=token), email=invitation.email),
    )
    return page, status, NO_STORE


def _landed(invitation: Invitation, joined: bool):
    session[SESSION_TENANT_KEY] = invitation.tenant_id
    if joined:
        flash(f"You joined {invitation.tenant.name} as {invitation.role}.")
    else:
        flash(f"You were already a member of {invitation.tenant.name}; your role there is unchanged.")
    return redirect(url_for("dashboard.index"), 303)


def _accept(invitation: Invitation):
    already = any(m.tenant_id == invitation.tenant_id for m in current_user.memberships)
    if service.accept(invitation, current_user._get_current_object()) is None:
        return _invalid()
    return _landed(invitation, joined=not already)


def _create_account(invitation: Invitation, token: str):
    password = request.form.get("password", "")
    errors = new_password_errors(password, request.form.get("confirm", ""))
    if errors:
        return _join_page(invitation, token, errors, 422)
    try:
        user = service.create_account(invitation, password)
    except service.AccountExists:
        message = f"{invitation.email} already has an account: log in with it to accept."
        return _join_page(invitation, token, {"account": message}, 409)
    if user is None:
        return _invalid()
    session.clear()  # as at login: nothing from before survives it
    login_user(user)
    return _landed(invitation, joined=True)
