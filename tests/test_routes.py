"""Every route of the app needs a caller and a permission, unless it is on a short allowlist."""

import uuid

from webapp.permissions import PERMISSIONS

# Reviewed: reachable without a permission check, and why.
PUBLIC = {
    "static",  # our CSS and JS
    "health.healthz",  # load balancers
    "auth.login",
    "auth.logout",  # POST with CSRF; ends the caller's own session
    "metrics.metrics",  # Prometheus; requires METRICS_TOKEN when it is set
}
LOGGED_IN_ONLY = {
    "dashboard.index",  # shows "no tenant" to a user without one; the data part needs scripts:read
    "auth.switch_tenant",  # checks the membership itself
    "api.validate_cron",  # any authenticated caller: a pure function of its input
    "endpoints.serve",  # checks endpoints:call itself, to answer with SPEC §7's JSON errors
}


def test_every_view_declares_its_permission(app):
    unchecked = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC | LOGGED_IN_ONLY:
            continue
        view = app.view_functions[rule.endpoint]
        permission = getattr(view, "required_permission", None)
        if permission not in PERMISSIONS["admin"]:
            unchecked.append(rule.rule)
    assert unchecked == []


def test_anonymous_callers_get_401_or_the_login_page_everywhere(app, client):
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC:
            continue
        url = rule.rule
        for arg in rule.arguments:
            url = url.replace(f"<{arg}>", str(uuid.uuid4())).replace(f"<int:{arg}>", "1")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = client.open(url, method=method)
            if url.startswith("/api/"):
                assert response.status_code == 401, (method, url)
            else:
                assert response.status_code in (302, 400), (method, url, response.status_code)
                if response.status_code == 302:
                    assert response.headers["Location"].startswith("/login"), (method, url)
