"""CSRF: every unsafe request made with a logged-in session must carry the page's token, on
every UI rule and on the REST API and endpoint rules when they are called with a session."""

import pytest

from tests.conftest import csrf_from
from tests.security.web import SOURCE, make_world, rules
from webapp.extensions import db
from webapp.models import ApiToken, Invitation, Membership, Script, StorageItem, Tenant, User
from webapp.scripts import service

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
FORMS = {
    "auth.login": {"email": "owner@acme.io", "password": "correct-horse-1"},
    "scripts.set_status": {"status": "disabled"},
    "admin.change_role": {"role": "admin"},
    "admin.create_invitation": {"email": "new@acme.io", "role": "admin"},
    "invitations.invitation": {"password": "long-enough-1", "confirm": "long-enough-1"},
    "admin.create_token": {"name": "stolen", "role": "admin"},
    "scripts.rollback": {},
    "executions.run": {"params": "{}"},
    "admin.update_settings": {"fetch": "only", "hosts": "attacker.example"},
}


@pytest.fixture
def world(app, make_user, make_token):
    world = make_world(app, make_user, make_token)
    with app.app_context():  # endpoint routes for every unsafe method, so that none is a 404
        tenant = db.session.get(Tenant, world.tenant_id)
        for method in sorted(UNSAFE):
            for path in ("/", "/hello"):
                data = {"name": f"{method}{path}", "type": "endpoint", "source": SOURCE}
                service.create_script(tenant, None, {**data, "endpoint_method": method, "endpoint_path": path})
    return world


def _state(app) -> dict:
    with app.app_context():
        return {
            "scripts": sorted((str(s.id), s.status, s.version) for s in db.session.scalars(db.select(Script))),
            "members": sorted((m.id, m.role) for m in db.session.scalars(db.select(Membership))),
            "tokens": sorted((t.id, t.revoked_at is None) for t in db.session.scalars(db.select(ApiToken))),
            "invitations": sorted(
                (i.id, i.accepted_at is None, i.revoked_at is None) for i in db.session.scalars(db.select(Invitation))
            ),
            "users": sorted(db.session.scalars(db.select(User.email))),
            "storage": sorted(db.session.scalars(db.select(StorageItem.key))),
            "allowed hosts": [t.fetch_allowed_hosts for t in db.session.scalars(db.select(Tenant).order_by(Tenant.id))],
        }


@pytest.mark.parametrize("token", ["missing", "another-sessions"])
def test_unsafe_requests_of_a_session_without_its_csrf_token_are_refused(app, client, world, login, token):
    login("owner@acme.io")
    other = app.test_client()
    foreign = csrf_from(other.get("/login").get_data(as_text=True))  # valid, but not this session's
    before = _state(app)
    refused = 0
    for rule, method in rules(app):
        if method not in UNSAFE:
            continue
        url = world.url(rule)
        form = dict(FORMS.get(rule.endpoint, {}))
        headers = {}
        if token == "another-sessions":
            form["csrf_token"] = foreign
            headers["X-CSRFToken"] = foreign
        if url.startswith("/api/"):
            response = client.open(url, method=method, json={"name": "x"}, headers=headers)
            assert response.status_code == 400, (method, url, response.status_code)
            assert response.get_json()["error"]["code"] == "csrf_failed", (method, url)
        else:
            response = client.open(url, method=method, data=form, headers=headers)
            assert response.status_code == 400, (method, url, response.status_code)
            assert "CSRF check failed" in response.get_data(as_text=True), (method, url)
        refused += 1
    assert refused >= 20
    assert _state(app) == before  # nothing was changed, created, revoked or deleted
    assert client.get("/").status_code == 200  # and the session is still logged in


def test_the_same_requests_with_the_token_get_through(app, client, world, login):
    """The sweep above can fail: with the token, CSRF is no obstacle."""
    csrf = login("owner@acme.io")
    response = client.post(f"/scripts/{world.script_id}/status", data={"csrf_token": csrf, "status": "disabled"})
    assert response.status_code in (200, 303)
    response = client.patch(
        f"/api/v1/scripts/{world.script_id}", json={"description": "via session"}, headers={"X-CSRFToken": csrf}
    )
    assert response.status_code == 200
    assert response.get_json()["description"] == "via session"


def test_bearer_calls_need_no_csrf_token(app, world, make_token):
    token = make_token("owner@acme.io")
    fresh = app.test_client()  # no cookies at all
    response = fresh.patch(
        f"/api/v1/scripts/{world.script_id}",
        json={"description": "by token"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200
