"""The API tokens and members pages."""

import re
from datetime import timedelta

from tests.conftest import bearer
from webapp.extensions import db
from webapp.models import ApiToken, utcnow

NEW_TOKEN = re.compile(r'<pre class="copyable" id="new-token">(srt_[^<]+)</pre>')


def test_token_is_shown_once_listed_and_revocable(client, admin_session):
    response = client.post("/tokens", data={"csrf_token": admin_session, "name": "deploys", "role": "editor"})
    assert response.status_code == 303 and response.headers["Location"] == "/tokens"  # post/redirect/get
    with client.session_transaction() as session:  # the cookie holds a reference, not the token
        kept = dict(session)
    shown = client.get("/tokens")
    assert shown.headers["Cache-Control"] == "no-store"
    page = shown.get_data(as_text=True)
    token = NEW_TOKEN.search(page).group(1)
    assert "shown only this once" in page
    assert token not in str(kept) and kept["new_token"]
    listing = client.get("/tokens").get_data(as_text=True)
    assert token not in listing and not NEW_TOKEN.search(listing)
    assert "deploys" in listing and "boss@acme.io" in listing
    assert re.search(
        r"<td data-label=\"Last used\">never</td>\s*<td data-label=\"Expires\">never</td>", listing
    )  # never used, never expires
    assert client.get("/api/v1/scripts", headers=bearer(token)).status_code == 200
    assert not re.search(
        r"<td data-label=\"Last used\">never</td>\s*<td data-label=\"Expires\">never</td>",
        client.get("/tokens").get_data(as_text=True),
    )
    token_id = re.search(r'action="/tokens/(\d+)/revoke"', listing).group(1)
    assert client.post(f"/tokens/{token_id}/revoke", data={"csrf_token": admin_session}).status_code == 303
    assert "revoked" in client.get("/tokens").get_data(as_text=True)
    assert client.get("/api/v1/scripts", headers=bearer(token)).status_code == 401


def test_a_new_token_is_a_viewer_unless_chosen(client, admin_session, app):
    page = client.get("/tokens").get_data(as_text=True)
    assert re.findall(r"<option selected>(\w+)</option>", page) == ["viewer"]
    assert client.post("/tokens", data={"csrf_token": admin_session, "name": "ci"}).status_code == 303
    with app.app_context():
        assert db.session.scalar(db.select(ApiToken.role)) == "viewer"


def test_a_token_may_expire(client, admin_session, app):
    for bad, message in (("0", "between 1 and 3650 days"), ("soon", "a whole number of days")):
        response = client.post("/tokens", data={"csrf_token": admin_session, "name": "t", "expires_in_days": bad})
        page = response.get_data(as_text=True)
        assert response.status_code == 422 and message in page, page
        assert 'id="token-expires-error"' in page and f'value="{bad}"' in page  # kept for correcting
    before = utcnow()
    data = {"csrf_token": admin_session, "name": "monthly", "expires_in_days": "30"}
    assert client.post("/tokens", data=data).status_code == 303
    with app.app_context():
        expires_at = db.session.scalar(db.select(ApiToken.expires_at))
    assert before + timedelta(days=30) <= expires_at <= utcnow() + timedelta(days=30)
    assert f'datetime="{expires_at.isoformat()}"' in client.get("/tokens").get_data(as_text=True)


def test_an_expired_token_is_refused_like_a_revoked_one(client, admin_session, app, make_token):
    plaintext = make_token("boss@acme.io")
    assert client.get("/api/v1/scripts", headers=bearer(plaintext)).status_code == 200
    with app.app_context():
        db.session.execute(db.update(ApiToken).values(expires_at=utcnow() - timedelta(minutes=1)))
        db.session.commit()
    response = client.get("/api/v1/scripts", headers=bearer(plaintext))
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthorized"
    assert client.get("/api/scripts/hello", headers=bearer(plaintext)).status_code == 401  # endpoint calls too
    assert re.search(r"<td data-label=\"Expires\">expired <time", client.get("/tokens").get_data(as_text=True))


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
