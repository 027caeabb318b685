"""The tenant's settings (/settings and /api/v1/settings): the hosts its scripts may fetch, set
by its admins, normalised, refused with the bad entry named, recorded in the audit log, and no
one else's business."""

import html
import re

import pytest
import sqlalchemy as sa

from tests.conftest import bearer
from tests.test_audit import entries
from webapp.extensions import db
from webapp.models import Tenant

REFUSED = "Only admins of acme can change the tenant&#39;s settings; you are {} {}."


def stored(app, tenant: str = "acme") -> tuple[list | None, bool]:
    """The tenant's allowlist, and whether the column is SQL NULL (not the JSON text 'null')."""
    with app.app_context():
        row = db.session.execute(
            sa.select(Tenant.fetch_allowed_hosts, Tenant.fetch_allowed_hosts.is_(None)).where(Tenant.name == tenant)
        ).one()
        return row[0], row[1]


def textarea(page: str) -> str:
    return html.unescape(re.search(r'<textarea id="fetch-hosts"[^>]*>(.*?)</textarea>', page, re.S).group(1))


def checked(page: str) -> list[str]:
    return re.findall(r'name="fetch" value="(\w+)" checked', page)


def save(client, csrf: str, fetch: str, hosts: str = ""):
    return client.post("/settings", data={"csrf_token": csrf, "fetch": fetch, "hosts": hosts})


def test_an_admin_restricts_fetch_on_the_page_and_sees_it_saved(app, client, admin_session):
    page = client.get("/settings").get_data(as_text=True)
    assert "<h1>Settings</h1>" in page and "Outbound HTTP (fetch)" in page
    assert checked(page) == ["any"] and textarea(page) == ""
    assert "an empty list, scripts may not fetch at all" in page  # said before anyone tries
    assert "cloud metadata addresses" in page  # the platform's guard holds either way
    assert 'href="/settings" aria-current="page">Settings</a>' in page

    response = save(client, admin_session, "only", "API.Example.com.\n*.example.com, api.example.com\n\n  ")
    assert response.status_code == 303 and response.headers["Location"] == "/settings"  # post/redirect/get
    page = client.get("/settings").get_data(as_text=True)
    assert "Saved: scripts may fetch only 2 host patterns." in page
    assert checked(page) == ["only"] and textarea(page) == "api.example.com\n*.example.com"
    assert stored(app) == (["api.example.com", "*.example.com"], False)  # normalised, order kept, once each

    assert save(client, admin_session, "only", "").status_code == 303
    assert "Saved: scripts may not fetch at all." in client.get("/settings").get_data(as_text=True)
    assert stored(app) == ([], False)

    assert save(client, admin_session, "any", "ignored.example.com").status_code == 303
    page = client.get("/settings").get_data(as_text=True)
    assert "Saved: scripts may fetch any public host." in page and checked(page) == ["any"]
    assert stored(app) == (None, True)

    assert save(client, admin_session, "any").status_code == 303
    assert "Nothing changed" in client.get("/settings").get_data(as_text=True)


def test_a_bad_entry_is_named_and_nothing_is_saved(app, client, admin_session):
    assert save(client, admin_session, "only", "api.example.com").status_code == 303
    before = len(entries(app, "settings.update"))
    typed = "ok.example.com\nhttps://hooks.example.com/path"
    response = save(client, admin_session, "only", typed)
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "&#39;https://hooks.example.com/path&#39; is not a host name or a *.pattern" in page
    assert 'aria-invalid="true"' in page and textarea(page) == typed and checked(page) == ["only"]  # kept to fix
    for bad in ("*", "exa_mple.com", "*.*.example.com", "a" * 64 + ".com"):
        response = save(client, admin_session, "only", bad)
        assert response.status_code == 422 and f"{bad!r} is not" in html.unescape(response.get_data(as_text=True))
    hostile = "<img src=x onerror=alert(1)>"
    page = save(client, admin_session, "only", hostile).get_data(as_text=True)
    assert hostile not in page and "&lt;img src=x onerror=alert(1)&gt;" in page  # escaped, in the field and the error
    too_many = "\n".join(f"h{n}.example.com" for n in range(101))
    assert "at most 100 host patterns, not 101" in save(client, admin_session, "only", too_many).get_data(as_text=True)
    assert save(client, admin_session, "sometimes").status_code == 422
    assert stored(app) == (["api.example.com"], False)
    assert len(entries(app, "settings.update")) == before


@pytest.mark.parametrize("role", ["viewer", "editor"])
def test_viewers_and_editors_are_refused_and_see_no_link(app, client, make_user, make_token, login, role):
    make_user(f"{role}@acme.io", "acme", role)
    csrf = login(f"{role}@acme.io")
    article = "a" if role == "viewer" else "an"
    response = client.get("/settings")
    assert response.status_code == 403
    assert REFUSED.format(article, role) in response.get_data(as_text=True)
    assert save(client, csrf, "only", "evil.example.com").status_code == 403
    assert 'href="/settings"' not in client.get("/").get_data(as_text=True)
    headers = bearer(make_token(f"{role}@acme.io"))
    for method, body in (("GET", None), ("PATCH", {"fetch_allowed_hosts": []})):
        for auth in (headers, {"X-CSRFToken": csrf}):
            response = client.open("/api/v1/settings", method=method, json=body, headers=auth)
            assert response.status_code == 403 and response.get_json()["error"]["code"] == "forbidden"
    assert stored(app) == (None, True) and entries(app, "settings.update") == []


def test_the_api_reads_and_changes_the_allowlist(app, client, admin):
    assert client.get("/api/v1/settings", headers=admin).get_json() == {"fetch_allowed_hosts": None}
    body = {"fetch_allowed_hosts": ["*.Example.com", "api.github.com", "*.example.com"]}
    response = client.patch("/api/v1/settings", json=body, headers=admin)
    assert response.status_code == 200
    assert response.get_json() == {"fetch_allowed_hosts": ["*.example.com", "api.github.com"]}
    assert client.get("/api/v1/settings", headers=admin).get_json() == response.get_json()
    unchanged = client.patch("/api/v1/settings", json={}, headers=admin)  # nothing to change
    assert unchanged.status_code == 200 and unchanged.get_json() == response.get_json()

    for body, message in (
        ({"fetch_allowed_hosts": ["ok.example.com", "10.0.0.1:8080"]}, "'10.0.0.1:8080' is not a host name"),
        ({"fetch_allowed_hosts": ["a.example.com b.example.com"]}, "is not one host pattern: give each its own item"),
        ({"fetch_allowed_hosts": [""]}, "'' is not one host pattern"),
        ({"fetch_allowed_hosts": "api.example.com"}, "must be null or a list of host patterns"),
        ({"fetch_allowed_hosts": [1]}, "must be null or a list of host patterns"),
        ({"fetch_allowed_hosts": [f"h{n}.example.com" for n in range(101)]}, "at most 100 host patterns"),
    ):
        response = client.patch("/api/v1/settings", json=body, headers=admin)
        error = response.get_json()["error"]
        assert response.status_code == 422 and error["code"] == "invalid_fields", body
        assert message in error["fields"]["fetch_allowed_hosts"], error
    response = client.patch("/api/v1/settings", json={"fetch_allowed_hosts": None, "colour": "red"}, headers=admin)
    assert response.status_code == 422 and response.get_json()["error"]["fields"] == {"colour": "unknown field"}
    assert stored(app) == (["*.example.com", "api.github.com"], False)  # no refused call changed anything

    assert client.patch("/api/v1/settings", json={"fetch_allowed_hosts": []}, headers=admin).status_code == 200
    assert stored(app) == ([], False)
    assert client.patch("/api/v1/settings", json={"fetch_allowed_hosts": None}, headers=admin).status_code == 200
    assert stored(app) == (None, True)


def test_a_session_changes_settings_over_the_api_with_its_csrf_token(app, client, admin_session):
    body = {"fetch_allowed_hosts": ["api.example.com"]}
    assert client.patch("/api/v1/settings", json=body).status_code == 400  # no X-CSRFToken
    response = client.patch("/api/v1/settings", json=body, headers={"X-CSRFToken": admin_session})
    assert response.status_code == 200 and stored(app) == (["api.example.com"], False)


def test_another_tenant_is_unaffected(app, client, admin, make_user, make_token):
    make_user("spy@globex.io", "globex", "admin")
    globex = bearer(make_token("spy@globex.io", tenant="globex"))
    body = {"fetch_allowed_hosts": ["*.globex.example"]}
    assert client.patch("/api/v1/settings", json=body, headers=globex).status_code == 200
    assert client.get("/api/v1/settings", headers=admin).get_json() == {"fetch_allowed_hosts": None}
    assert stored(app, "acme") == (None, True) and stored(app, "globex") == (["*.globex.example"], False)
    assert client.get("/api/v1/audit?action=settings.update", headers=admin).get_json()["total"] == 0
    assert client.get("/api/v1/audit?action=settings.update", headers=globex).get_json()["total"] == 1


def test_each_change_is_one_audit_entry_with_the_old_and_new_lists(app, client, admin_session, make_token):
    assert save(client, admin_session, "only", "api.example.com").status_code == 303
    assert save(client, admin_session, "only", "api.example.com").status_code == 303  # unchanged: no entry
    token = bearer(make_token("boss@acme.io"))
    body = {"fetch_allowed_hosts": ["api.example.com", "*.slack.com"]}
    assert client.patch("/api/v1/settings", json=body, headers=token).status_code == 200
    assert client.patch("/api/v1/settings", json={"fetch_allowed_hosts": []}, headers=token).status_code == 200
    assert save(client, admin_session, "any").status_code == 303

    got = entries(app, "settings.update")
    both = ["api.example.com", "*.slack.com"]
    with app.app_context():
        acme = db.session.scalar(sa.select(Tenant).where(Tenant.name == "acme"))
        target = {"type": "tenant", "id": str(acme.id), "label": "acme", "version": None}
    assert [(e["actor"]["type"], e["actor"]["label"], e["target"], e["changes"]) for e in got] == [
        ("user", "boss@acme.io", target, {"fetch_allowed_hosts": {"old": None, "new": ["api.example.com"]}}),
        (
            "token",
            "boss@acme.io",
            target,
            {"fetch_allowed_hosts": {"old": ["api.example.com"], "new": both}},
        ),
        ("token", "boss@acme.io", target, {"fetch_allowed_hosts": {"old": both, "new": []}}),
        ("user", "boss@acme.io", target, {"fetch_allowed_hosts": {"old": [], "new": None}}),
    ]
    page = client.get("/audit?action=settings.update").get_data(as_text=True)
    assert '<option value="settings.update" selected>' in page
    assert "fetch_allowed_hosts: — → [api.example.com]" in page
    assert "fetch_allowed_hosts: [api.example.com, *.slack.com] → []" in page
    assert "fetch_allowed_hosts: [] → —" in page
