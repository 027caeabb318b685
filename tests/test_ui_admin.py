"""The API tokens and members pages."""

import re

from tests.conftest import bearer


def test_token_is_shown_once_listed_and_revocable(client, admin_session):
    response = client.post("/tokens", data={"csrf_token": admin_session, "name": "deploys", "role": "editor"})
    assert response.status_code == 201
    page = response.get_data(as_text=True)
    token = re.search(r'<pre class="copyable" id="new-token">(srt_[^<]+)</pre>', page).group(1)
    assert "shown only this once" in page
    listing = client.get("/tokens").get_data(as_text=True)
    assert token not in listing
    assert "deploys" in listing and "boss@acme.io" in listing and "never" in listing
    assert client.get("/api/v1/scripts", headers=bearer(token)).status_code == 200
    assert "never" not in client.get("/tokens").get_data(as_text=True)  # last use recorded
    token_id = re.search(r'action="/tokens/(\d+)/revoke"', listing).group(1)
    assert client.post(f"/tokens/{token_id}/revoke", data={"csrf_token": admin_session}).status_code == 303
    assert "revoked" in client.get("/tokens").get_data(as_text=True)
    assert client.get("/api/v1/scripts", headers=bearer(token)).status_code == 401


def test_tokens_of_another_tenant_cannot_be_revoked(client, admin_session, make_user, make_token, app):
    make_user("spy@globex.io", "globex", "admin")
    make_token("spy@globex.io", tenant="globex")
    from webapp.extensions import db
    from webapp.models import ApiToken

    with app.app_context():
        other_id = db.session.scalar(db.select(ApiToken.id))
    assert client.post(f"/tokens/{other_id}/revoke", data={"csrf_token": admin_session}).status_code == 404
    assert "spy@globex.io" not in client.get("/tokens").get_data(as_text=True)


def test_members_change_role_and_remove(client, admin_session, make_user):
    make_user("new@acme.io", "acme", "viewer")
    page = client.get("/members").get_data(as_text=True)
    assert "new@acme.io" in page
    member_id = re.search(
        r'action="/members/(\d+)/role"[^<]*<input[^>]*>\s*'
        r'<label for="role-\d+" class="visually-hidden">Role of new@acme.io',
        page,
    )
    assert member_id
    mid = member_id.group(1)
    assert client.post(f"/members/{mid}/role", data={"csrf_token": admin_session, "role": "editor"}).status_code == 303
    assert client.post(f"/members/{mid}/remove", data={"csrf_token": admin_session}).status_code == 303
    assert "new@acme.io" not in client.get("/members").get_data(as_text=True)


def test_members_are_no_longer_added_directly(client, admin_session, make_user):
    """Adding someone is an invitation they accept (tests/test_invitations.py)."""
    make_user("existing@other.io", "globex", "viewer")
    response = client.post(
        "/members", data={"csrf_token": admin_session, "email": "existing@other.io", "role": "editor"}
    )
    assert response.status_code == 405
    assert "existing@other.io" not in client.get("/members").get_data(as_text=True)


def test_the_last_admin_cannot_leave_or_be_demoted(client, admin_session):
    page = client.get("/members").get_data(as_text=True)
    mid = re.search(r'action="/members/(\d+)/role"', page).group(1)
    demote = client.post(f"/members/{mid}/role", data={"csrf_token": admin_session, "role": "viewer"})
    assert demote.status_code == 422 and "at least one admin" in demote.get_data(as_text=True)
    remove = client.post(f"/members/{mid}/remove", data={"csrf_token": admin_session})
    assert remove.status_code == 422
