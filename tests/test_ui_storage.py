"""The storage browser through Flask's test client: editors and admins list, read and delete
their tenant's live keys; viewers get 403; another tenant's keys are never listed, read or
deleted, whatever name is guessed; deleting uncounts the key's bytes from the quota."""

import re
from datetime import datetime, timedelta
from html import unescape
from urllib.parse import quote

import pytest
from sqlalchemy import func, select

from tests.invitations import visible_text
from tests.storage import expire, store, tenant_id
from webapp import quotas
from webapp.extensions import db
from webapp.models import StorageItem

ODD_KEY = "reports/2026 Q1/naïve café ✓ #1?a=b&c=%20"
VALUE = {"html": "<script>alert('x')</script>", "rows": [1, 2], "note": "é"}


@pytest.fixture
def keys(app, make_user) -> None:
    """acme: 25 `user:` keys, one odd key, one expired key; globex: one key named like acme's."""
    make_user("eve@globex.io", "globex", "admin")
    make_user("ed@acme.io", "acme", "editor")
    store(app, "acme", {f"user:{n:02}": {"n": n} for n in range(25)})
    store(app, "acme", {ODD_KEY: VALUE})
    store(app, "acme", {"session:old": "stale"}, ttl=3600)
    expire(app, "acme", "session:old")
    store(app, "globex", {"globex-only": 1, ODD_KEY: "globex's own"})


def _item_url(key: str) -> str:
    return "/storage/item?key=" + quote(key, safe="")


def _listed(html: str) -> list[str]:
    return [
        unescape(k) for k in re.findall(r'<td data-label="Key" class="storage-key"><a [^>]*><code>([^<]*)</code>', html)
    ]


@pytest.mark.usefixtures("keys")
def test_an_editor_lists_live_keys_by_prefix_and_page(client, login):
    login("ed@acme.io")
    page = client.get("/storage").get_data(as_text=True)
    assert _listed(page) == [ODD_KEY, *[f"user:{n:02}" for n in range(19)]]  # sorted, 20 a page
    assert "Page 1 of 2 (26 keys)" in page  # the expired key is not counted
    assert 'href="/storage" aria-current="page">Storage</a>' in page
    second = client.get("/storage?page=2").get_data(as_text=True)
    assert _listed(second) == [f"user:{n:02}" for n in range(19, 25)]
    assert "Page 2 of 2" in second
    past = visible_text(client.get("/storage?page=3").get_data(as_text=True))
    assert "There is no page 3: 26 keys fit on 2. First page ." in past

    only = client.get("/storage?prefix=user:1").get_data(as_text=True)
    assert _listed(only) == [f"user:{n}" for n in range(10, 20)]
    assert "10 keys" in visible_text(only)
    assert _listed(client.get("/storage?prefix=USER:").get_data(as_text=True)) == []  # case matters
    assert _listed(client.get("/storage?prefix=user_").get_data(as_text=True)) == []  # no LIKE wildcards
    assert _listed(client.get("/storage?prefix=%25").get_data(as_text=True)) == []
    assert _listed(client.get("/storage?prefix=reports/2026 Q1/naïve").get_data(as_text=True)) == [ODD_KEY]
    nothing = client.get("/storage?prefix=nope").get_data(as_text=True)
    assert "No keys start with “nope”. Show all" in visible_text(nothing)

    # htmx asks for the table alone; its pager keeps the prefix
    partial = client.get("/storage?prefix=user:", headers={"HX-Request": "true", "HX-Target": "storage-table"})
    html = partial.get_data(as_text=True)
    assert html.startswith('<div id="storage-table">') and "<html" not in html
    assert 'href="/storage?page=2&amp;prefix=user:"' in html or 'href="/storage?prefix=user:&amp;page=2"' in html


@pytest.mark.usefixtures("keys")
def test_the_list_shows_size_expiry_and_last_update(client, login, app):
    store(app, "acme", {"cache:soon": [1, 2, 3]}, ttl=600)
    login("ed@acme.io")
    text = visible_text(client.get("/storage?prefix=cache:").get_data(as_text=True))
    # key (10) + value "[1, 2, 3]" (9): the bytes the quota counts
    row = re.search(r"cache:soon 19 bytes (\S+ \S+) UTC (\S+ \S+) UTC 1 key", text)
    expires, updated = (datetime.fromisoformat(row.group(n)) for n in (1, 2))
    assert expires - updated == timedelta(seconds=600)
    text = visible_text(client.get("/storage?prefix=user:00").get_data(as_text=True))
    assert re.search(r"user:00 \d+ bytes never \d{4}-", text)


@pytest.mark.usefixtures("keys")
def test_a_keys_page_shows_its_value_pretty_printed_and_escaped(client, login):
    login("ed@acme.io")
    response = client.get(_item_url(ODD_KEY))
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "<script>alert" not in html
    assert (
        "{\n  &#34;html&#34;: &#34;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&#34;,\n  &#34;rows&#34;: [\n    1,\n"
        in html
    )
    text = visible_text(html)
    assert f"Key {ODD_KEY}" in text and '"note": "é"' in text and "Expires never" in text
    # the list links to this page with the key in the query string
    listing = client.get("/storage?prefix=reports/").get_data(as_text=True)
    href = unescape(re.search(r'<td data-label="Key" class="storage-key"><a href="([^"]+)"', listing).group(1))
    assert client.get(href).status_code == 200 and href.startswith("/storage/item?key=")


@pytest.mark.usefixtures("keys")
def test_missing_expired_and_odd_keys_answer_404(client, login):
    csrf = login("ed@acme.io")
    for url in (
        "/storage/item",
        "/storage/item?key=",
        _item_url("nope"),
        _item_url("session:old"),
    ):
        assert client.get(url).status_code == 404, url
    for key in ("nope", "session:old", ""):
        assert client.post("/storage/delete?key=" + quote(key), data={"csrf_token": csrf}).status_code == 404


@pytest.mark.usefixtures("keys")
def test_deleting_a_key_uncounts_its_bytes_and_says_so(client, login, app):
    csrf = login("ed@acme.io")
    acme = tenant_id(app, "acme")
    with app.app_context():
        before = quotas.current(acme).storage_bytes
        size = db.session.scalar(
            select(StorageItem.size_bytes).where(StorageItem.key == ODD_KEY, StorageItem.tenant_id == acme)
        )
    url = "/storage/delete?key=" + quote(ODD_KEY, safe="")
    assert client.post(url).status_code == 400  # no CSRF token: nothing happens
    assert client.get(_item_url(ODD_KEY)).status_code == 200
    response = client.post(url, data={"csrf_token": csrf})
    assert response.status_code == 303 and response.headers["Location"] == "/storage"  # post/redirect/get
    page = client.get("/storage").get_data(as_text=True)
    assert f"Key “{ODD_KEY}” deleted." in visible_text(page)
    assert ODD_KEY not in _listed(page)
    assert client.get(_item_url(ODD_KEY)).status_code == 404
    with app.app_context():
        after = quotas.current(acme).storage_bytes
        stored = db.session.scalar(select(func.sum(StorageItem.size_bytes)).where(StorageItem.tenant_id == acme))
        globex_kept = db.session.scalar(select(StorageItem.value).where(StorageItem.key == ODD_KEY))
    assert after == before - size == stored  # the counter matches a recount
    assert globex_kept == '"globex\'s own"'  # the same name in another tenant is untouched


@pytest.mark.usefixtures("keys")
def test_another_tenants_keys_are_never_listed_read_or_deleted(client, login, app):
    csrf = login("eve@globex.io")
    listing = client.get("/storage").get_data(as_text=True)
    assert _listed(listing) == ["globex-only", ODD_KEY]
    assert "user:0" not in listing
    for key in ("user:01", "session:old"):  # acme's names, guessed
        assert client.get(_item_url(key)).status_code == 404
        assert client.post("/storage/delete?key=" + quote(key), data={"csrf_token": csrf}).status_code == 404
    assert "globex&#39;s own" in client.get(_item_url(ODD_KEY)).get_data(as_text=True)
    assert client.post("/storage/delete?key=" + quote(ODD_KEY, safe=""), data={"csrf_token": csrf}).status_code == 303
    with app.app_context():
        left = db.session.scalars(select(StorageItem.key).where(StorageItem.tenant_id == tenant_id(app, "acme"))).all()
    assert len(left) == 27 and ODD_KEY in left and "user:01" in left


@pytest.mark.usefixtures("keys")
@pytest.mark.parametrize("role", ["viewer", "editor", "admin"])
def test_viewers_get_403_and_no_link(client, login, make_user, role):
    make_user(f"{role}@acme.io", "acme", role)
    csrf = login(f"{role}@acme.io")
    allowed = role != "viewer"
    statuses = [
        client.get("/storage").status_code,
        client.get(_item_url("user:01")).status_code,
        client.post("/storage/delete?key=user:01", data={"csrf_token": csrf}).status_code,
    ]
    assert statuses == ([200, 200, 303] if allowed else [403, 403, 403])
    assert ('href="/storage"' in client.get("/").get_data(as_text=True)) == allowed
    if role == "admin":  # the usage page leads to the keys that fill the quota
        assert 'href="/storage">Browse and delete storage keys</a>' in client.get("/usage").get_data(as_text=True)
