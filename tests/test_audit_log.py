"""Reading the audit log (docs/audit.md): admins only, one tenant's entries, filters and
paging, the streamed CSV export, retention, and the versions page's links to entries."""

import csv
import io
from dataclasses import replace
from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask import Flask

from tests.conftest import SOURCE, bearer
from tests.services import eventually
from webapp.audit import queries
from webapp.audit.log import prune_audit
from webapp.extensions import db
from webapp.models import AuditEntry, Tenant, utcnow

MANUAL = {"name": "job", "type": "manual", "source": SOURCE}


def _add_entries(app: Flask, tenant: str, count: int, age: timedelta = timedelta(0), **fields) -> None:
    """Entries as the log holds them, written in bulk (one INSERT of many rows)."""
    with app.app_context():
        tenant_id = db.session.scalar(sa.select(Tenant.id).where(Tenant.name == tenant))
        when = utcnow() - age
        rows = [
            {
                "tenant_id": tenant_id,
                "created_at": when - timedelta(microseconds=i),
                "actor_type": "user",
                "actor_label": "bulk@acme.io",
                "action": "script.update",
                "target_type": "script",
                "target_id": f"script-{i}",
                "target_label": f"job {i}",
                "address": "10.0.0.1",
                "user_agent": "bulk",
                "changes": {"fields": ["source"], "version": {"old": i, "new": i + 1}},
                **fields,
            }
            for i in range(count)
        ]
        db.session.execute(sa.insert(AuditEntry), rows)
        db.session.commit()


@pytest.mark.parametrize("role", ["viewer", "editor"])
def test_only_admins_read_the_log(client, make_user, make_token, login, role):
    make_user(f"{role}@acme.io", "acme", role)
    headers = bearer(make_token(f"{role}@acme.io"))
    assert client.get("/api/v1/audit", headers=headers).status_code == 403
    login(f"{role}@acme.io")
    for url in ("/audit", "/audit.csv", "/api/v1/audit"):
        assert client.get(url).status_code == 403, url
    assert 'href="/audit"' not in client.get("/").get_data(as_text=True)


def test_another_tenants_entries_are_never_listed(app, client, admin, make_user, make_token, login):
    assert client.post("/api/v1/scripts", json=MANUAL, headers=admin).status_code == 201
    with app.app_context():
        acme_entry = db.session.scalar(sa.select(AuditEntry.id).where(AuditEntry.action == "script.create"))
    make_user("spy@globex.io", "globex", "admin")
    spy = bearer(make_token("spy@globex.io", tenant="globex"))
    listed = client.get("/api/v1/audit", headers=spy).get_json()
    assert listed["total"] == 1 and listed["items"][0]["changes"]["user"] == "spy@globex.io"  # their token's
    assert client.get(f"/api/v1/audit?entry={acme_entry}", headers=spy).get_json()["total"] == 0
    login("spy@globex.io")
    for url in ("/audit", f"/audit?entry={acme_entry}", "/audit.csv"):
        body = client.get(url).get_data(as_text=True)
        assert "boss@acme.io" not in body and "job" not in body, url
    own = client.get("/api/v1/audit", headers=admin).get_json()
    assert [e["action"] for e in own["items"]] == ["script.create", "token.create"]


def test_the_api_filters_and_pages(app, client, admin, make_user):
    _add_entries(app, "acme", 3, age=timedelta(days=3))
    assert client.post("/api/v1/scripts", json=MANUAL, headers=admin).status_code == 201
    assert client.put("/api/v1/secrets/API_KEY", json={"value": "v-1234"}, headers=admin).status_code == 201

    def get(**args) -> dict:
        response = client.get("/api/v1/audit", query_string=args, headers=admin)
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    assert get()["total"] == 6  # the admin fixture's token.create too
    assert [e["action"] for e in get(action="secret.set")["items"]] == ["secret.set"]
    assert {e["action"] for e in get(action="script")["items"]} == {"script.create", "script.update"}
    assert get(actor="BULK@acme.io")["total"] == 3
    assert get(actor="boss@acme.io")["total"] == 2
    token_id = get(actor="boss@acme.io")["items"][0]["actor"]["token_id"]
    assert get(actor=f"token:{token_id}")["total"] == 2
    assert get(actor="system")["items"][0]["action"] == "token.create"  # made outside a request
    assert [e["target"]["label"] for e in get(target="job")["items"]] == ["job"]
    assert get(target="API_KEY")["items"][0]["changes"] == {"created": True}
    today = utcnow().date()
    assert get(since=today.isoformat())["total"] == 3
    assert get(until=(today - timedelta(days=1)).isoformat())["total"] == 3
    assert get(since=(utcnow() - timedelta(days=4)).isoformat(), until=today.isoformat())["total"] == 6  # to its end
    assert get(since=(utcnow() - timedelta(hours=1)).isoformat())["total"] == 3
    first = get(per_page=2)
    assert first["total"] == 6 and len(first["items"]) == 2 and first["items"][0]["action"] == "secret.set"
    third = get(per_page=2, page=3)
    assert [e["target"]["label"] for e in third["items"]] == ["job 1", "job 2"]  # the oldest last
    entry = first["items"][1]
    assert get(entry=entry["id"])["items"] == [entry]
    for bad in ({"action": "script.explode"}, {"since": "yesterday"}, {"entry": "x"}, {"per_page": 501}):
        refused = client.get("/api/v1/audit", query_string=bad, headers=admin)
        assert refused.status_code == 422 and set(refused.get_json()["error"]["fields"]) == set(bad)


def test_the_page_filters_pages_and_swaps_its_table(app, client, admin_session):
    _add_entries(app, "acme", 60)
    page = client.get("/audit")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "Page 1 of 2 (61 events)" in text  # and the session's login
    assert 'href="/audit?actor=bulk@acme.io"' in text and 'href="/audit?target=script-0"' in text
    assert '<span class="change">version: 0 → 1</span>' in text and "version: 59 → 60" not in text  # newest first
    second = client.get("/audit?page=2", headers={"HX-Request": "true", "HX-Target": "audit-table"})
    body = second.get_data(as_text=True)
    assert body.strip().startswith('<div id="audit-table">') and "<!doctype" not in body  # the table alone
    assert "version: 59 → 60" in body and "login.success" in body and "Page 2 of 2" in body
    filtered = client.get("/audit?action=login.success").get_data(as_text=True)
    assert "bulk@acme.io" not in filtered.split('id="audit-table"')[1].split("</table>")[0]
    bad = client.get("/audit?since=tomorrow-ish")
    assert bad.status_code == 422 and "Since must be a date" in bad.get_data(as_text=True)


def test_the_csv_export_streams_in_batches(app, client, admin_session):
    """10,000 entries: the response is iterated in chunks, each read by its own SELECT of at most
    EXPORT_BATCH rows, and the session never holds more than one batch."""
    _add_entries(app, "acme", 10_000)
    selects: list[int] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and "audit_entries" in statement:
            selects.append(len(db.session.identity_map))

    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        response = client.get("/audit.csv?action=script.update")
        assert response.status_code == 200 and response.mimetype == "text/csv"
        assert response.is_streamed
        assert "attachment" in response.headers["Content-Disposition"]
        chunks = [chunk.decode() for chunk in response.response]
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    rows = list(csv.reader(io.StringIO("".join(chunks))))
    assert rows[0] == list(queries.CSV_COLUMNS) and len(rows) == 10_001
    assert len(chunks) >= 10_000 // queries.EXPORT_BATCH
    assert len(selects) >= 10_000 // queries.EXPORT_BATCH
    assert max(selects) <= queries.EXPORT_BATCH + 10  # what the session holds as each batch is read
    assert len({row[0] for row in rows[1:]}) == 10_000  # every entry once
    assert rows[1][9] == "job 0" and rows[-1][9] == "job 9999"  # newest first


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted(app, client, admin_session):
    for name in ("=SUM(1+1)", "+1", "-2", "@cmd", "plain"):
        assert client.post("/tokens", data={"csrf_token": admin_session, "name": name}).status_code == 303
    rows = list(csv.reader(io.StringIO(client.get("/audit.csv?action=token.create").get_data(as_text=True))))
    labels = [row[9] for row in rows[1:]]
    assert labels == ["plain", "'@cmd", "'-2", "'+1", "'=SUM(1+1)"]
    assert queries.safe_cell("\tx") == "'\tx" and queries.safe_cell(None) == ""


def test_retention_prunes_only_entries_past_it(app, make_user):
    make_user("boss@acme.io", "acme", "admin")
    make_user("g@globex.io", "globex", "admin")
    _add_entries(app, "acme", 3, age=timedelta(days=400))
    _add_entries(app, "acme", 2, age=timedelta(days=300))
    _add_entries(app, "globex", 1, age=timedelta(days=366))
    with app.app_context():
        assert prune_audit() == 4
        assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == 2
    app.config["SETTINGS"] = replace(app.config["SETTINGS"], audit_retention_days=30)
    _add_entries(app, "acme", 1, age=timedelta(days=29))
    with app.app_context():
        assert prune_audit() == 2
        assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry)) == 1


def test_the_versions_page_says_who_saved_each_version_from_where(app, client, admin_session, make_user, login):
    form = {"csrf_token": admin_session, "name": "job", "type": "manual", "status": "active", "source": SOURCE}
    script_id = client.post("/scripts/new", data=form).headers["Location"].rsplit("/", 1)[1]
    client.post(f"/scripts/{script_id}/edit", data={**form, "source": SOURCE + "// 2\n"})
    with app.app_context():
        versions = sa.select(AuditEntry.id).where(AuditEntry.target_version.is_not(None))
        ids = db.session.scalars(versions.order_by(AuditEntry.target_version)).all()
    page = client.get(f"/scripts/{script_id}/versions").get_data(as_text=True)
    assert len(ids) == 2
    for entry_id in ids:
        assert f'href="/audit?entry={entry_id}">saved by boss@acme.io from 127.0.0.1</a>' in page
    entry_page = client.get(f"/audit?entry={ids[-1]}").get_data(as_text=True).split('id="audit-table"')[1]
    assert "script.update" in entry_page and "script.create" not in entry_page and "1 event" in entry_page
    make_user("vic@acme.io", "acme", "viewer")
    client.post("/logout", data={"csrf_token": admin_session})
    login("vic@acme.io")
    viewer_page = client.get(f"/scripts/{script_id}/versions").get_data(as_text=True)
    assert "saved by" not in viewer_page and "127.0.0.1" not in viewer_page and "boss@acme.io" in viewer_page


def test_a_workers_upkeep_prunes_entries_past_retention(app, make_user, start_worker):
    make_user("boss@acme.io", "acme", "admin")
    _add_entries(app, "acme", 3, age=timedelta(days=11))
    _add_entries(app, "acme", 2, age=timedelta(days=9))

    def remaining() -> int:
        with app.app_context():
            return db.session.scalar(sa.select(sa.func.count()).select_from(AuditEntry))

    start_worker(AUDIT_RETENTION_DAYS="10")
    eventually(lambda: remaining() == 2, timeout=30, what="the old entries pruned")


@pytest.mark.parametrize(
    "bad",
    [
        {"entry": "²"},  # str.isdigit() says yes, int() says no
        {"page": "²"},
        {"until": "9999-12-31"},  # the day after it is past the last date Python has
        {"since": "0001-01-01T00:00:00+01:00"},  # before the first time Python has, in UTC
    ],
)
def test_odd_filters_and_paging_are_refused_naming_them(client, admin_session, bad):
    api = client.get("/api/v1/audit", query_string=bad)
    assert api.status_code == 422 and set(api.get_json()["error"]["fields"]) == set(bad), api.get_data(as_text=True)
    page = client.get("/audit", query_string=bad)
    assert page.status_code == (200 if "page" in bad else 422)  # the page shows page 1 for a bad page
    if "page" not in bad:
        assert client.get("/audit.csv", query_string=bad).status_code == 422


def test_a_token_filter_of_other_digits_matches_nothing(client, admin):
    listed = client.get("/api/v1/audit", query_string={"actor": "token:²"}, headers=admin)
    assert listed.status_code == 200 and listed.get_json()["total"] == 0
