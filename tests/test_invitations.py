"""Members join by invitation (docs/members.md): the admin's side on /members, and each way the
link can be opened. Attacks by a hostile admin: tests/security/test_invitation_attacks.py."""

import re
from datetime import timedelta

import pytest

from tests.conftest import PASSWORD, csrf_from
from tests.invitations import invite, link_of, log_in, visible_text
from webapp.auth.tokens import digest
from webapp.extensions import db
from webapp.models import Invitation, Membership, Tenant, User, utcnow


def _membership(app, email: str, tenant: str = "acme") -> str | None:
    with app.app_context():
        stmt = (
            db.select(Membership.role)
            .join(User)
            .join(Tenant, Tenant.id == Membership.tenant_id)
            .where(User.email == email, Tenant.name == tenant)
        )
        return db.session.scalar(stmt)


def _invitation(app, link: str) -> Invitation:
    with app.app_context():
        found = db.session.scalar(db.select(Invitation).where(Invitation.token_hash == digest(link.rsplit("/", 1)[1])))
        db.session.expunge(found)
        return found


def test_the_link_is_shown_once_listed_as_pending_and_stored_hashed(app, client, admin_session):
    response = invite(client, admin_session, "Ann@Example.com", "editor")
    assert response.status_code == 201
    assert response.headers["Cache-Control"] == "no-store"
    link = link_of(response)
    text = visible_text(response.get_data(as_text=True))
    assert "Invitation link for ann@example.com" in text
    assert "shown only this once" in text and "no email is sent" in text
    listing = client.get("/members").get_data(as_text=True)
    token = link.rsplit("/", 1)[1]
    assert token not in listing
    pending = visible_text(listing).split("Pending invitations", 1)[1]
    assert "ann@example.com editor" in pending and "boss@acme.io Revoke" in pending
    with app.app_context():
        stored = db.session.scalar(db.select(Invitation))
        assert stored.token_hash == digest(token) and stored.email == "ann@example.com"
        assert stored.expires_at - stored.created_at == timedelta(days=7)
        for row in db.session.execute(db.text("SELECT * FROM invitations")):
            assert token not in " ".join(map(str, row))


def test_the_members_page_has_no_password_field_and_ignores_one(app, client, admin_session, make_user):
    make_user("known@globex.io", "globex", "viewer")
    page = client.get("/members").get_data(as_text=True)
    assert 'type="password"' not in page and "Password" not in page
    with app.app_context():
        before = db.session.scalar(db.select(User.password_hash).where(User.email == "known@globex.io"))
    response = invite(client, admin_session, "known@globex.io", "admin", password="chosen-by-the-admin")
    assert response.status_code == 201
    assert _membership(app, "known@globex.io") is None  # no member until they accept
    with app.app_context():
        after = db.session.scalar(db.select(User.password_hash).where(User.email == "known@globex.io"))
        assert after == before
        assert db.session.scalar(db.select(db.func.count()).select_from(User)) == 2


def test_invalid_addresses_roles_and_present_members_are_refused(client, admin_session, make_user):
    make_user("member@acme.io", "acme", "viewer")
    bad_email = invite(client, admin_session, "not-an-email")
    assert bad_email.status_code == 422 and "is not an email address" in bad_email.get_data(as_text=True)
    bad_role = invite(client, admin_session, "x@acme.io", "owner")
    assert bad_role.status_code == 422 and "must be one of viewer, editor, admin" in bad_role.get_data(as_text=True)
    member = invite(client, admin_session, "Member@acme.io")
    assert member.status_code == 422 and "is already a member of this tenant" in member.get_data(as_text=True)
    assert "No pending invitations." in client.get("/members").get_data(as_text=True)


def test_inviting_again_replaces_the_earlier_link(app, client, admin_session):
    first = link_of(invite(client, admin_session, "ann@example.com", "viewer"))
    second = invite(client, admin_session, "ann@example.com", "editor")
    assert "The earlier invitation of this address no longer works." in second.get_data(as_text=True)
    anonymous = app.test_client()
    assert anonymous.get(first).status_code == 404
    assert "as editor" in visible_text(anonymous.get(link_of(second)).get_data(as_text=True))
    assert visible_text(client.get("/members").get_data(as_text=True)).count("ann@example.com") == 1


def test_revoke_ends_the_link(app, client, admin_session):
    link = link_of(invite(client, admin_session, "ann@example.com"))
    listing = client.get("/members").get_data(as_text=True)
    invitation_id = _invitation(app, link).id
    assert f'action="/members/invitations/{invitation_id}/revoke"' in listing
    assert (
        client.post(f"/members/invitations/{invitation_id}/revoke", data={"csrf_token": admin_session}).status_code
        == 303
    )
    assert "No pending invitations." in client.get("/members").get_data(as_text=True)
    assert app.test_client().get(link).status_code == 404


def test_the_invited_account_accepts_and_lands_in_the_tenant(app, client, admin_session, make_user):
    make_user("ann@example.com", "globex", "admin")
    link = link_of(invite(client, admin_session, "ann@example.com", "editor"))
    ann = app.test_client()
    assert log_in(ann, "ann@example.com").status_code == 302
    page = ann.get(link)
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    text = visible_text(page.get_data(as_text=True))
    assert "You are invited to the tenant acme as editor by boss@acme.io." in text
    assert "Accept and join acme" in text
    accepted = ann.post(link, data={"csrf_token": csrf_from(page.get_data(as_text=True))})
    assert accepted.status_code == 303 and accepted.headers["Location"] == "/"
    dashboard = visible_text(ann.get("/").get_data(as_text=True))
    assert "You joined acme as editor." in dashboard
    assert ann.get("/scripts/new").status_code == 200  # acting in acme, as editor
    assert _membership(app, "ann@example.com") == "editor"
    invitation = _invitation(app, link)
    assert invitation.accepted_at is not None and invitation.accepted_by_id is not None
    assert ann.get(link).status_code == 404  # used
    assert "No pending invitations." in client.get("/members").get_data(as_text=True)
    later = app.test_client()  # the next login lands in the tenant joined last
    log_in(later, "ann@example.com")
    assert re.search(r'<option value="\d+" selected>acme \(editor\)</option>', later.get("/").get_data(as_text=True))


def test_accepting_needs_the_pages_csrf_token(app, client, admin_session, make_user):
    make_user("ann@example.com", "globex", "viewer")
    link = link_of(invite(client, admin_session, "ann@example.com"))
    ann = app.test_client()
    log_in(ann, "ann@example.com")
    assert ann.post(link).status_code == 400
    assert _membership(app, "ann@example.com") is None


def test_another_account_is_told_the_link_is_for_another_address(app, client, admin_session, make_user):
    make_user("eve@globex.io", "globex", "admin")
    link = link_of(invite(client, admin_session, "ann@example.com", "admin"))
    eve = app.test_client()
    log_in(eve, "eve@globex.io")
    page = eve.get(link)
    assert page.status_code == 403
    text = visible_text(page.get_data(as_text=True))
    assert "This invitation is for another address" in text and "You are logged in as eve@globex.io" in text
    assert "ann@example.com" not in text and "acme" not in text
    refused = eve.post(link, data={"csrf_token": csrf_from(page.get_data(as_text=True))})
    assert refused.status_code == 403
    assert _membership(app, "eve@globex.io") is None
    assert _invitation(app, link).accepted_at is None
    # "Log out and open the invitation" ends eve's session and comes back to the link
    out = eve.post("/logout", data={"csrf_token": csrf_from(page.get_data(as_text=True)), "next": link})
    assert out.status_code == 302 and out.headers["Location"] == link
    assert "Create your account" in visible_text(eve.get(link).get_data(as_text=True))


def test_an_existing_account_logs_in_from_the_link_and_accepts(app, client, admin_session, make_user):
    make_user("ann@example.com", "globex", "viewer")
    link = link_of(invite(client, admin_session, "ann@example.com", "viewer"))
    ann = app.test_client()
    page = ann.get(link).get_data(as_text=True)
    login_url = f"/login?next={link}&amp;email=ann@example.com"
    assert f'href="{login_url}"' in page
    login_page = ann.get(login_url.replace("&amp;", "&")).get_data(as_text=True)
    assert 'value="ann@example.com"' in login_page  # the address is filled in
    logged_in = log_in(ann, "ann@example.com", next_path=link)
    assert logged_in.headers["Location"] == link
    accept = ann.get(link).get_data(as_text=True)
    assert "Accept and join acme" in visible_text(accept)
    assert ann.post(link, data={"csrf_token": csrf_from(accept)}).status_code == 303
    assert _membership(app, "ann@example.com") == "viewer"
    assert "You joined acme as viewer." in visible_text(ann.get("/").get_data(as_text=True))


def test_a_new_person_creates_the_account_from_the_link(app, client, admin_session):
    link = link_of(invite(client, admin_session, "new@example.com", "editor"))
    newcomer = app.test_client()
    page = newcomer.get(link)
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    csrf = csrf_from(page.get_data(as_text=True))
    short = newcomer.post(link, data={"csrf_token": csrf, "password": "short", "confirm": "short"})
    assert short.status_code == 422
    assert "The password must be at least 8 characters." in visible_text(short.get_data(as_text=True))
    differ = newcomer.post(link, data={"csrf_token": csrf, "password": "new-password-1", "confirm": "new-password-2"})
    assert differ.status_code == 422 and "The two passwords differ." in visible_text(differ.get_data(as_text=True))
    with app.app_context():
        assert db.session.scalar(db.select(User).where(User.email == "new@example.com")) is None
    created = newcomer.post(link, data={"csrf_token": csrf, "password": "new-password-1", "confirm": "new-password-1"})
    assert created.status_code == 303 and created.headers["Location"] == "/"
    dashboard = visible_text(newcomer.get("/").get_data(as_text=True))
    assert "You joined acme as editor." in dashboard and "new@example.com" in dashboard
    assert _membership(app, "new@example.com") == "editor"
    assert newcomer.get(link).status_code == 404
    again = app.test_client()  # the chosen password is theirs
    assert log_in(again, "new@example.com", "new-password-1").status_code == 302


@pytest.mark.parametrize("how", ["used", "revoked", "expired", "inviter demoted", "inviter removed", "unknown"])
def test_a_stale_link_answers_the_same_404_page(app, client, admin_session, make_user, how):
    make_user("boss2@acme.io", "acme", "admin")
    link = link_of(invite(client, admin_session, "ann@example.com"))
    with app.app_context():
        invitation = db.session.scalar(db.select(Invitation))
        boss = db.session.scalar(db.select(Membership).join(User).where(User.email == "boss@acme.io"))
        if how == "used":
            invitation.accepted_at = utcnow()
        elif how == "revoked":
            invitation.revoked_at = utcnow()
        elif how == "expired":
            invitation.expires_at = utcnow() - timedelta(seconds=1)
        elif how == "inviter demoted":
            boss.role = "editor"
        elif how == "inviter removed":
            db.session.delete(boss)
        db.session.commit()
    if how == "unknown":
        link = link[:-1] + ("A" if link[-1] != "A" else "B")
    visitor = app.test_client()
    never = visitor.get("/invitations/" + "x" * 43)
    assert never.status_code == 404, never.get_data(as_text=True)
    for response in (visitor.get(link), visitor.post(link, data={"csrf_token": csrf_from(never.get_data(True))})):
        assert response.status_code == 404, response.get_data(as_text=True)
        assert visible_text(response.get_data(as_text=True)) == visible_text(never.get_data(as_text=True))
    assert "This invitation link is not valid" in visible_text(never.get_data(as_text=True))
    assert "ann@example.com" not in never.get_data(as_text=True)


def test_pending_invitations_of_a_demoted_admin_leave_the_list(app, client, admin_session, make_user, login):
    make_user("boss2@acme.io", "acme", "admin")
    link_of(invite(client, admin_session, "ann@example.com"))
    with app.app_context():
        db.session.scalar(db.select(Membership).join(User).where(User.email == "boss@acme.io")).role = "viewer"
        db.session.commit()
    other = app.test_client()
    log_in(other, "boss2@acme.io")
    assert "No pending invitations." in other.get("/members").get_data(as_text=True)


def test_accepting_when_already_a_member_keeps_the_role(app, client, admin_session, make_user):
    link = link_of(invite(client, admin_session, "ann@example.com", "admin"))
    make_user("ann@example.com", "acme", "viewer")  # added meanwhile by the operator's CLI
    ann = app.test_client()
    log_in(ann, "ann@example.com")
    page = ann.get(link).get_data(as_text=True)
    assert ann.post(link, data={"csrf_token": csrf_from(page)}).status_code == 303
    assert "already a member of acme; your role there is unchanged" in visible_text(ann.get("/").get_data(True))
    assert _membership(app, "ann@example.com") == "viewer"


def test_a_member_of_no_tenant_can_still_accept(app, client, admin_session, make_user):
    make_user("ann@example.com", "globex", "viewer")
    with app.app_context():
        globex = db.select(Tenant.id).where(Tenant.name == "globex").scalar_subquery()
        db.session.execute(db.delete(Membership).where(Membership.tenant_id == globex))
        db.session.commit()
    link = link_of(invite(client, admin_session, "ann@example.com", "viewer"))
    ann = app.test_client()
    log_in(ann, "ann@example.com")
    assert "not a member of any tenant" in ann.get("/").get_data(as_text=True)
    page = ann.get(link).get_data(as_text=True)
    assert ann.post(link, data={"csrf_token": csrf_from(page)}).status_code == 303
    assert ann.get("/scripts").status_code == 200


def test_the_link_is_absolute_and_reaches_the_page(client, admin_session):
    response = invite(client, admin_session, "ann@example.com")
    page = response.get_data(as_text=True)
    assert 'id="invitation-link">http://localhost/invitations/' in page
    assert PASSWORD not in page
