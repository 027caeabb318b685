"""Who may do what: every rule of the URL map for every role (docs/members.md), through the UI and
the REST API, and tenant isolation."""

import re
import uuid

import pytest

from tests.conftest import SOURCE, bearer
from tests.security.test_web_routes import PUBLIC
from tests.security.web import destructive, make_world, rules

MANUAL = {"name": "job", "type": "manual", "source": SOURCE}


@pytest.fixture
def script_id(client, make_user, make_token) -> str:
    make_user("owner@acme.io", "acme", "admin")
    response = client.post("/api/v1/scripts", json=MANUAL, headers=bearer(make_token("owner@acme.io")))
    return response.get_json()["id"]


# Per rule, the lowest role that may use it (docs/members.md's roles). Reviewed by hand: not
# derived from webapp/auth/roles.py, so that a change there that loosens a rule fails here.
MINIMUM_ROLE = {
    "dashboard.index": "viewer",
    "auth.switch_tenant": "viewer",
    "auth.choose_tenant": "viewer",
    "auth.account": "viewer",
    "auth.change_password": "viewer",
    "scripts.index": "viewer",
    "scripts.detail": "viewer",
    "scripts.versions": "viewer",
    "scripts.version": "viewer",
    "scripts.cron_preview": "viewer",
    "scripts.latest": "viewer",
    "scripts.schedule": "viewer",
    "executions.index": "viewer",
    "executions.detail": "viewer",
    "executions.result": "viewer",
    "api.list_scripts": "viewer",
    "api.get_script": "viewer",
    "api.list_versions": "viewer",
    "api.get_version": "viewer",
    "api.list_executions": "viewer",
    "api.get_execution": "viewer",
    "api.validate_cron": "viewer",
    "api.list_secrets": "viewer",
    "secrets.index": "viewer",
    "scripts.new": "editor",
    "scripts.edit": "editor",
    "scripts.delete": "editor",
    "scripts.set_status": "editor",
    "scripts.rollback": "editor",
    "scripts.trigger_fields": "editor",
    "executions.run": "editor",
    "storage.index": "editor",
    "storage.item": "editor",
    "storage.delete": "editor",
    "executions.rerun": "editor",
    "drafts.run_saved": "editor",
    "drafts.run_unsaved": "editor",
    "drafts.unsaved_result": "editor",
    "drafts.sample": "editor",
    "api.create_script": "editor",
    "api.update_script": "editor",
    "api.delete_script": "editor",
    "api.rollback": "editor",
    "api.run_script": "editor",
    "api.put_secret": "editor",
    "api.delete_secret": "editor",
    "secrets.create": "editor",
    "secrets.replace": "editor",
    "secrets.delete": "editor",
    "api.rerun_execution": "editor",
    "admin.tokens": "admin",
    "admin.create_token": "admin",
    "admin.revoke_token": "admin",
    "admin.members": "admin",
    "admin.create_invitation": "admin",
    "admin.revoke_invitation": "admin",
    "admin.change_role": "admin",
    "admin.remove_member": "admin",
    "admin.usage": "admin",
    "api.usage": "admin",
    "audit.index": "admin",
    "audit.export": "admin",
    "api.list_audit": "admin",
    "admin.settings": "admin",
    "admin.update_settings": "admin",
    "api.get_settings": "admin",
    "api.update_settings": "admin",
}
NOT_IN_MATRIX = PUBLIC | {"endpoints.serve"}  # endpoints:call is every role's: tests/test_endpoints.py
RANK = {"viewer": 0, "editor": 1, "admin": 2}
API_BODIES = {
    "api.create_script": {**MANUAL, "name": "other"},
    "api.update_script": {"description": "changed"},
    "api.rollback": {"version": 1},
    "api.run_script": {"params": {}, "wait": 0},
    "api.validate_cron": {"expression": "@daily"},
    "api.put_secret": {"value": "a new value"},
    "api.update_settings": {"fetch_allowed_hosts": ["api.example.com"]},
}
UI_FORMS = {
    "scripts.set_status": {"status": "disabled"},
    "drafts.run_saved": {"source": SOURCE},
    "drafts.run_unsaved": {"type": "manual", "source": SOURCE},
    "admin.change_role": {"role": "editor"},
    "admin.create_invitation": {"email": "new@acme.io", "role": "viewer"},
    "admin.create_token": {"name": "t", "role": "viewer"},
    "auth.switch_tenant": {"tenant_id": "1"},
    "secrets.create": {"name": "NEW_KEY", "value": "a new value"},
    "secrets.replace": {"value": "a new value"},
    "admin.update_settings": {"fetch": "only", "hosts": "api.example.com"},
}


@pytest.fixture
def world(app, make_user, make_token):
    return make_world(app, make_user, make_token)


def test_the_matrix_covers_every_rule(app):
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()} - NOT_IN_MATRIX
    assert endpoints == set(MINIMUM_ROLE)


def _call(client, world, rule, method, role_headers, csrf):
    fresh = destructive(rule)
    url = world.url(
        rule,
        world.fresh_script() if fresh and "script_id" in rule.arguments else None,
        world.fresh_secret() if fresh and "name" in rule.arguments else None,
    )
    if url.startswith("/api/"):
        return client.open(url, method=method, json=API_BODIES.get(rule.endpoint), headers=role_headers)
    data = {"csrf_token": csrf, **UI_FORMS.get(rule.endpoint, {})} if method != "GET" else None
    return client.open(url, method=method, data=data)


@pytest.mark.parametrize("role", ["viewer", "editor", "admin"])
def test_role_matrix_over_every_ui_and_api_rule(app, client, world, make_user, make_token, login, role):
    """Each role, through the UI session, the API with its token and the API with its session."""
    app.config["RUN_WAIT_SECONDS"] = 0  # no worker here: a UI run answers at once, queued
    make_user(f"{role}@acme.io", "acme", role)
    csrf = login(f"{role}@acme.io")
    token = bearer(make_token(f"{role}@acme.io"))
    session_api = {"X-CSRFToken": csrf}
    checked = 0
    for rule, method in rules(app):
        if rule.endpoint in NOT_IN_MATRIX:
            continue
        allowed = RANK[role] >= RANK[MINIMUM_ROLE[rule.endpoint]]
        for headers in [token, session_api] if rule.rule.startswith("/api/") else [{}]:
            response = _call(client, world, rule, method, headers, csrf)
            where = (role, method, rule.rule, "token" if headers is token else "session", response.status_code)
            if allowed:
                assert response.status_code not in (401, 403, 404, 405) and response.status_code < 500, where
            else:
                assert response.status_code == 403, where
                if rule.rule.startswith("/api/"):
                    assert response.get_json()["error"]["code"] == "forbidden"
            checked += 1
    assert checked >= 45
    page = client.get("/scripts").get_data(as_text=True)
    assert ("New script" in page) == (role != "viewer")
    nav = client.get("/").get_data(as_text=True)
    assert ('href="/tokens"' in nav) == (role == "admin")


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
    page = client.get("/tenant").get_data(as_text=True)  # two tenants, none used yet: they choose
    acme_id = re.search(r'name="tenant_id" value="(\d+)">\s*<button[^>]*>\s*<span[^>]*>acme<', page).group(1)
    globex_id = re.search(r'name="tenant_id" value="(\d+)">\s*<button[^>]*>\s*<span[^>]*>globex<', page).group(1)
    assert client.post("/tenant", data={"tenant_id": acme_id, "csrf_token": csrf}).status_code == 302
    page = client.get("/").get_data(as_text=True)
    assert "acme (viewer)" in page and "globex (editor)" in page
    assert client.get(f"/scripts/{script_id}").status_code == 200
    assert client.get("/scripts/new").status_code == 403
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
