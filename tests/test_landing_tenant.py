"""Which tenant a login lands in (docs/members.md): the last-used one, else the only one, else
the user chooses; never silently the first by name."""

import re

from tests.conftest import csrf_from
from tests.invitations import log_in, visible_text
from webapp.extensions import db
from webapp.models import Membership, Tenant, User


def _current_tenant(client) -> str:
    """The tenant the header shows as the one acted in."""
    page = client.get("/").get_data(as_text=True)
    selected = re.search(r"<option value=\"\d+\" selected>([a-z0-9-]+) \(", page)
    if selected:
        return selected.group(1)
    return re.search(r'<span class="tenant-name" title="Tenant">([a-z0-9-]+) ·', page).group(1)


def _choose(client, tenant: str, next_path: str | None = None):
    page = client.get("/tenant").get_data(as_text=True)
    tenant_id = re.search(r'name="tenant_id" value="(\d+)">\s*<button[^>]*>\s*<span[^>]*>' + tenant + "<", page)
    data = {"tenant_id": tenant_id.group(1), "csrf_token": csrf_from(page)}
    if next_path:
        data["next"] = next_path
    return client.post("/tenant", data=data)


def _log_out(client) -> None:
    client.post("/logout", data={"csrf_token": csrf_from(client.get("/tenant").get_data(as_text=True))})


def test_a_login_lands_in_the_last_used_tenant(app, client, make_user):
    for tenant in ("acme", "globex", "initech"):
        make_user("ann@x.io", tenant, "viewer")
    assert log_in(client, "ann@x.io").headers["Location"] == "/"
    assert client.get("/").headers["Location"] == "/tenant"  # several, none used yet: ask
    chooser = visible_text(client.get("/tenant").get_data(as_text=True))
    assert "Choose a tenant" in chooser and all(t in chooser for t in ("acme", "globex", "initech"))
    assert _choose(client, "initech").status_code == 302
    assert _current_tenant(client) == "initech"
    _log_out(client)
    log_in(client, "ann@x.io")
    assert client.get("/").status_code == 200
    assert _current_tenant(client) == "initech"  # not acme, the first by name
    # The switcher in the header moves it too.
    _choose(client, "globex")
    other = app.test_client()  # another browser
    log_in(other, "ann@x.io")
    assert _current_tenant(other) == "globex"
    with app.app_context():
        user = db.session.scalar(db.select(User).where(User.email == "ann@x.io"))
        assert db.session.get(Tenant, user.last_tenant_id).name == "globex"


def test_a_page_asked_for_before_choosing_comes_after_the_choice(client, make_user):
    make_user("ann@x.io", "acme", "viewer")
    make_user("ann@x.io", "globex", "editor")
    log_in(client, "ann@x.io")
    asked = client.get("/scripts/new")
    assert asked.status_code == 302 and asked.headers["Location"] == "/tenant?next=/scripts/new"
    chosen = _choose(client, "globex", "/scripts/new")
    assert chosen.headers["Location"] == "/scripts/new"
    assert client.get("/scripts/new").status_code == 200
    htmx = client.get("/scripts/new", headers={"HX-Request": "true"})
    assert htmx.status_code == 200  # chosen now: no redirect


def test_one_tenant_needs_no_choice(client, make_user):
    make_user("ann@x.io", "globex", "viewer")
    log_in(client, "ann@x.io")
    assert client.get("/").status_code == 200
    assert _current_tenant(client) == "globex"


def test_leaving_the_last_used_tenant_never_falls_back_to_the_first_by_name(app, client, make_user):
    for tenant in ("acme", "globex", "initech"):
        make_user("ann@x.io", tenant, "viewer")
    log_in(client, "ann@x.io")
    _choose(client, "globex")
    with app.app_context():
        globex = db.select(Tenant.id).where(Tenant.name == "globex").scalar_subquery()
        db.session.execute(db.delete(Membership).where(Membership.tenant_id == globex))
        db.session.commit()
    assert client.get("/scripts").headers["Location"] == "/tenant?next=/scripts"  # this session too
    _log_out(client)
    log_in(client, "ann@x.io")
    assert client.get("/").headers["Location"] == "/tenant"
    with app.app_context():
        acme = db.select(Tenant.id).where(Tenant.name == "acme").scalar_subquery()
        db.session.execute(db.delete(Membership).where(Membership.tenant_id == acme))
        db.session.commit()
    assert _current_tenant(client) == "initech"  # the one left


def test_switching_tenant_is_not_an_access_change(app, client, make_user, redis_url):
    from redis import Redis

    from webapp.auth.tokens import AUTH_VERSION_KEY

    make_user("ann@x.io", "acme", "viewer")
    make_user("ann@x.io", "globex", "viewer")
    log_in(client, "ann@x.io")
    before = Redis.from_url(redis_url).get(AUTH_VERSION_KEY)
    _choose(client, "globex")
    assert Redis.from_url(redis_url).get(AUTH_VERSION_KEY) == before  # cached token callers stay
