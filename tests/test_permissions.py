"""Who may do what: roles through the REST API and the UI, and tenant isolation."""

import re
import uuid

import pytest

from tests.conftest import SOURCE, bearer

MANUAL = {"name": "job", "type": "manual", "source": SOURCE}


@pytest.fixture
def script_id(client, make_user, make_token) -> str:
    make_user("owner@acme.io", "acme", "admin")
    response = client.post("/api/v1/scripts", json=MANUAL, headers=bearer(make_token("owner@acme.io")))
    return response.get_json()["id"]


API_CASES = [
    # (method, url template, body, minimum role)
    ("get", "/api/v1/scripts", None, "viewer"),
    ("get", "/api/v1/scripts/{id}", None, "viewer"),
    ("get", "/api/v1/scripts/{id}/versions", None, "viewer"),
    ("get", "/api/v1/scripts/{id}/executions", None, "viewer"),
    ("post", "/api/v1/cron/validate", {"expression": "@daily"}, "viewer"),
    ("post", "/api/v1/scripts", {**MANUAL, "name": "other"}, "editor"),
    ("patch", "/api/v1/scripts/{id}", {"description": "changed"}, "editor"),
    ("post", "/api/v1/scripts/{id}/rollback", {"version": 1}, "editor"),
    ("delete", "/api/v1/scripts/{id}", None, "editor"),
]
RANK = {"viewer": 0, "editor": 1, "admin": 2}


@pytest.mark.parametrize("role", ["viewer", "editor", "admin"])
def test_api_role_matrix(client, make_user, make_token, script_id, role):
    make_user(f"{role}@acme.io", "acme", role)
    headers = bearer(make_token(f"{role}@acme.io"))
    for method, template, body, minimum in API_CASES:
        url = template.format(id=script_id)
        response = getattr(client, method)(url, json=body, headers=headers)
        if RANK[role] >= RANK[minimum]:
            assert response.status_code in (200, 201, 204), (role, method, url, response.get_json())
        else:
            assert response.status_code == 403, (role, method, url)
            assert response.get_json()["error"]["code"] == "forbidden"


def test_token_role_is_capped_by_the_token_and_by_the_membership(client, app, make_user, make_token):
    make_user("boss@acme.io", "acme", "admin")
    viewer_token = bearer(make_token("boss@acme.io", role="viewer"))
    assert client.post("/api/v1/scripts", json=MANUAL, headers=viewer_token).status_code == 403
    editor_token = bearer(make_token("boss@acme.io", role="editor"))
    assert client.post("/api/v1/scripts", json=MANUAL, headers=editor_token).status_code == 201
    from webapp.extensions import db
    from webapp.models import Membership

    with app.app_context():
        db.session.scalar(db.select(Membership)).role = "viewer"  # demoted after the token was made
        db.session.commit()
    response = client.post("/api/v1/scripts", json={**MANUAL, "name": "two"}, headers=editor_token)
    assert response.status_code == 403


UI_CASES = [
    ("get", "/scripts", "viewer"),
    ("get", "/scripts/{id}", "viewer"),
    ("get", "/scripts/{id}/versions", "viewer"),
    ("get", "/scripts/{id}/versions/1", "viewer"),
    ("get", "/scripts/new", "editor"),
    ("get", "/scripts/{id}/edit", "editor"),
    ("get", "/scripts/{id}/delete", "editor"),
    ("post", "/scripts/{id}/status", "editor"),
    ("get", "/tokens", "admin"),
    ("get", "/members", "admin"),
]


@pytest.mark.parametrize("role", ["viewer", "editor", "admin"])
def test_ui_role_matrix(client, make_user, login, script_id, role):
    make_user(f"{role}@acme.io", "acme", role)
    csrf = login(f"{role}@acme.io")
    for method, template, minimum in UI_CASES:
        url = template.format(id=script_id)
        data = {"csrf_token": csrf, "status": "active"} if method == "post" else None
        response = getattr(client, method)(url, data=data)
        if RANK[role] >= RANK[minimum]:
            assert response.status_code in (200, 303), (role, url, response.status_code)
        else:
            assert response.status_code == 403, (role, url)
    page = client.get("/scripts").get_data(as_text=True)
    assert ("New script" in page) == (role != "viewer")
    nav = client.get("/").get_data(as_text=True)
    assert ('href="/tokens"' in nav) == (role == "admin")


def _rules_naming_a_script(app):
    for rule in app.url_map.iter_rules():
        if "script_id" in rule.arguments:
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                yield rule, method


def _url(rule, script_id: str) -> str:
    values = {arg: 1 for arg in rule.arguments}
    values["script_id"] = script_id
    path = rule.rule
    for name, value in values.items():
        path = re.sub(r"<(?:[a-z]+:)?" + name + ">", str(value), path)
    return path


def test_other_tenants_scripts_are_404_at_every_url(app, client, make_user, make_token, login, script_id):
    """A member of tenant B, with every role, learns nothing of tenant A's script."""
    make_user("spy@globex.io", "globex", "admin")
    csrf = login("spy@globex.io")
    token = bearer(make_token("spy@globex.io", tenant="globex"))
    checked = 0
    for rule, method in _rules_naming_a_script(app):
        for candidate in (script_id, str(uuid.uuid4())):  # someone else's id looks like a missing one
            url = _url(rule, candidate)
            if url.startswith("/api/"):
                response = client.open(url, method=method, json={"version": 1}, headers=token)
            else:
                response = client.open(url, method=method, data={"csrf_token": csrf, "version": "1"})
            assert response.status_code == 404, (method, url, response.status_code)
            checked += 1
    assert checked >= 20
    assert script_id not in client.get("/api/v1/scripts", headers=token).get_data(as_text=True)
    assert "job" not in client.get("/scripts").get_data(as_text=True)


def test_tenant_switcher_changes_what_is_seen(client, make_user, make_token, login, script_id):
    make_user("both@x.io", "acme", "viewer")
    make_user("both@x.io", "globex", "editor")
    csrf = login("both@x.io")
    page = client.get("/").get_data(as_text=True)
    assert "acme (viewer)" in page and "globex (editor)" in page
    assert client.get(f"/scripts/{script_id}").status_code == 200  # acme comes first by name
    assert client.get("/scripts/new").status_code == 403
    globex_id = re.search(r'<option value="(\d+)"\s*>globex', page).group(1)
    assert client.post("/tenant", data={"tenant_id": globex_id, "csrf_token": csrf}).status_code == 302
    assert client.get(f"/scripts/{script_id}").status_code == 404
    assert client.get("/scripts/new").status_code == 200
    # switching to a tenant one is not a member of is refused like a missing one
    assert client.post("/tenant", data={"tenant_id": "999", "csrf_token": csrf}).status_code == 404


def test_user_without_tenant_sees_an_explanation(client, app, login, make_user):
    from webapp.extensions import db
    from webapp.models import Membership

    make_user("lonely@x.io")
    with app.app_context():
        db.session.execute(db.delete(Membership))
        db.session.commit()
    token = client.get("/login").get_data(as_text=True)
    from tests.conftest import PASSWORD, csrf_from

    client.post("/login", data={"email": "lonely@x.io", "password": PASSWORD, "csrf_token": csrf_from(token)})
    response = client.get("/")
    assert response.status_code == 403
    assert "not a member of any tenant" in response.get_data(as_text=True)


def test_other_tenants_executions_tokens_and_members_are_404(app, client, make_user, make_token, login, script_id):
    from webapp.extensions import db
    from webapp.models import ApiToken, Execution, Membership, utcnow

    with app.app_context():
        execution = Execution(
            tenant_id=1,
            script_id=uuid.UUID(script_id),
            script_version=1,
            trigger="api",
            status="succeeded",
            queued_at=utcnow(),
        )
        db.session.add(execution)
        db.session.commit()
        execution_id = str(execution.id)
        token_id = db.session.scalar(db.select(ApiToken.id))
        member_id = db.session.scalar(db.select(Membership.id))
    make_user("spy@globex.io", "globex", "admin")
    csrf = login("spy@globex.io")
    token = bearer(make_token("spy@globex.io", tenant="globex"))
    assert client.get(f"/api/v1/executions/{execution_id}", headers=token).status_code == 404
    assert client.get(f"/executions/{execution_id}").status_code == 404
    assert client.get(f"/executions/{execution_id}/result").status_code == 404
    assert execution_id not in client.get("/executions").get_data(as_text=True)
    assert client.post(f"/tokens/{token_id}/revoke", data={"csrf_token": csrf}).status_code == 404
    for action in ("role", "remove"):
        response = client.post(f"/members/{member_id}/{action}", data={"csrf_token": csrf, "role": "viewer"})
        assert response.status_code == 404
