"""Every rule of the URL map needs a caller, unless it is on a short reviewed allowlist:
checked by requesting each rule anonymously with each of its methods."""

import pytest

from tests.conftest import csrf_from
from tests.security.web import make_world, rules
from webapp.auth.roles import PERMISSIONS

# Reviewed: reachable without a caller, and why.
PUBLIC = {
    "static",  # our CSS and JS
    "health.healthz",  # load balancers
    "auth.login",
    "auth.logout",  # POST with CSRF; ends the caller's own session
    "metrics.metrics",  # Prometheus; requires METRICS_TOKEN when it is set
    "api.openapi",  # the REST API's description: no tenant data (docs/api.md)
    # The one-time link an admin hands to the invitee, who may have no account yet: the token
    # is the credential; a stale or unknown one answers 404 (docs/members.md).
    "invitations.invitation",
}
# A caller is needed, but no single permission decides: each checks what it needs itself.
LOGGED_IN_ONLY = {
    "dashboard.index",  # shows "no tenant" to a user without one; the data part needs scripts:read
    "auth.switch_tenant",  # checks the membership itself
    "auth.choose_tenant",  # lists the caller's own memberships, whatever their roles
    "auth.account",  # one's own account, whatever one's roles (or none)
    "auth.change_password",  # one's own password: the current one is required
    "api.validate_cron",  # any authenticated caller: a pure function of its input
    "endpoints.serve",  # checks endpoints:call itself, to answer with its JSON errors (docs/endpoints.md)
}


@pytest.fixture
def world(app, make_user, make_token):
    return make_world(app, make_user, make_token)


def test_every_view_declares_its_permission(app):
    unchecked = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC | LOGGED_IN_ONLY:
            continue
        permission = getattr(app.view_functions[rule.endpoint], "required_permission", None)
        if permission not in PERMISSIONS["admin"]:
            unchecked.append(rule.rule)
    assert unchecked == []
    assert {rule.endpoint for rule in app.url_map.iter_rules()} >= PUBLIC | LOGGED_IN_ONLY  # no stale entries


def test_anonymous_callers_get_401_or_the_login_page_everywhere(app, client, world):
    # An anonymous session with a valid CSRF token, so that unsafe requests get past CSRF
    # and show what authentication alone does (tests/security/test_web_csrf.py: without it).
    csrf = csrf_from(client.get("/login").get_data(as_text=True))
    checked = 0
    for rule, method in rules(app):
        if rule.endpoint in PUBLIC:
            continue
        url = world.url(rule)
        headers = {"X-CSRFToken": csrf}
        data = {"csrf_token": csrf} if method != "GET" and not url.startswith("/api/") else None
        response = client.open(url, method=method, headers=headers, data=data)
        if url.startswith("/api/"):
            assert response.status_code == 401, (method, url, response.status_code)
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert response.get_json()["error"]["code"] == "unauthorized"
        else:
            assert response.status_code == 302, (method, url, response.status_code)
            assert response.headers["Location"].startswith("/login?next="), (method, url)
        checked += 1
    assert checked >= 40


def test_public_rules_answer_anonymous_callers(app, client, world):
    csrf = csrf_from(client.get("/login").get_data(as_text=True))
    expected = {
        ("static", "GET"): 200,
        ("health.healthz", "GET"): 200,
        ("auth.login", "GET"): 200,
        ("auth.login", "POST"): 401,  # wrong email or password
        ("auth.logout", "POST"): 302,
        ("metrics.metrics", "GET"): 200,  # METRICS_TOKEN is unset here (tests/test_metrics.py: set)
        ("api.openapi", "GET"): 200,
        ("invitations.invitation", "GET"): 200,  # the page to log in or create the account
        ("invitations.invitation", "POST"): 422,  # an account with password "x": too short
    }
    seen = {}
    for rule, method in rules(app):
        if rule.endpoint in PUBLIC:
            data = {"csrf_token": csrf, "email": "who@acme.io", "password": "x"} if method == "POST" else None
            seen[(rule.endpoint, method)] = client.open(world.url(rule), method=method, data=data).status_code
    assert seen == expected
