"""The audit log's entries (docs/audit.md): each change, through the UI, REST and the
CLI, makes exactly one entry naming who, what, from where and what changed, in the change's own
transaction; no secret value or password is ever in one."""

import json
import re
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import PASSWORD, SOURCE, csrf_from
from tests.invitations import invite, link_of
from tests.services import eventually
from webapp.extensions import db
from webapp.models import ApiToken, AuditEntry, Membership, Script, User
from webapp.serializers import audit_json

AGENT = {"User-Agent": "audit-test/1.0"}
SECRET_VALUE = "sk_live_do-not-log-me-4242"
MANUAL = {"name": "job", "type": "manual", "source": SOURCE}


def entries(app, action: str | None = None) -> list[dict]:
    with app.app_context():
        stmt = sa.select(AuditEntry).order_by(AuditEntry.id)
        if action:
            stmt = stmt.where(AuditEntry.action == action)
        return [audit_json(e) | {"tenant_id": e.tenant_id} for e in db.session.scalars(stmt)]


def actions(app) -> list[str]:
    return [e["action"] for e in entries(app)]


@pytest.fixture
def cli(app):
    runner = app.test_cli_runner()
    return lambda *args, input=None: runner.invoke(args=list(args), input=input)


def _token_id(app, email: str) -> int:
    with app.app_context():
        return db.session.scalar(
            sa.select(ApiToken.id).join(User).where(User.email == email).order_by(ApiToken.id.desc())
        )


def test_each_script_change_over_rest_is_one_entry_naming_the_token(app, client, editor):
    headers = {**editor, **AGENT}
    token_id = _token_id(app, "ed@acme.io")
    before = len(entries(app))
    script_id = client.post("/api/v1/scripts", json=MANUAL, headers=headers).get_json()["id"]
    url = f"/api/v1/scripts/{script_id}"
    assert client.patch(url, json={"source": SOURCE + "// 2\n"}, headers=headers).status_code == 200
    assert client.patch(url, json={"description": "now described"}, headers=headers).status_code == 200
    assert client.patch(url, json={"status": "disabled"}, headers=headers).status_code == 200
    assert client.patch(url, json={"status": "active"}, headers=headers).status_code == 200
    assert client.post(f"{url}/rollback", json={"version": 1}, headers=headers).status_code == 200
    run = client.post(f"{url}/run", json={"params": {"n": 1}}, headers=headers).get_json()
    again = client.post(f"/api/v1/executions/{run['id']}/rerun", json={}, headers=headers).get_json()
    assert client.delete(url, headers=headers).status_code == 204

    made = entries(app)[before:]
    assert [e["action"] for e in made] == [
        "script.create",
        "script.update",
        "script.update",
        "script.disable",
        "script.enable",
        "script.rollback",
        "script.run",
        "script.run",
        "script.delete",
    ]
    for e in made:
        assert e["actor"] == {
            "type": "token",
            "label": "ed@acme.io",
            "user_id": e["actor"]["user_id"],
            "token_id": token_id,
            "token_label": "test",
        }
        assert e["target"]["type"] == "script" and e["target"]["id"] == script_id and e["target"]["label"] == "job"
        assert e["address"] == "127.0.0.1" and e["user_agent"] == "audit-test/1.0"
    create, source, description, disable, enable, rollback, run_entry, rerun_entry, delete = made
    assert create["changes"] == {"version": {"old": None, "new": 1}} and create["target"]["version"] == 1
    assert source["changes"] == {"fields": ["source"], "version": {"old": 1, "new": 2}}
    assert source["target"]["version"] == 2
    assert description["changes"] == {"fields": ["description"], "version": {"old": 2, "new": 2}}
    assert description["target"]["version"] is None  # no version was made
    assert disable["changes"] == {"status": {"old": "active", "new": "disabled"}}
    assert enable["changes"] == {"status": {"old": "disabled", "new": "active"}}
    assert rollback["changes"] == {"fields": ["source"], "version": {"old": 2, "new": 3}, "restored_version": 1}
    assert run_entry["changes"] == {"execution": run["id"], "trigger": "api", "version": 3}
    assert rerun_entry["changes"] == {"execution": again["id"], "trigger": "api", "version": 3, "again_of": run["id"]}
    assert delete["changes"] == {"version": {"old": 3, "new": None}}


def _form(csrf: str, **fields) -> dict:
    return {"csrf_token": csrf, "name": "job", "type": "manual", "status": "active", "source": SOURCE, **fields}


def test_each_script_change_through_the_pages_is_one_entry_naming_the_user(app, client, editor_session):
    app.config["RUN_WAIT_SECONDS"] = 0  # no worker: the run stays queued
    csrf = editor_session
    before = len(entries(app))
    created = client.post("/scripts/new", data=_form(csrf))
    script_id = created.headers["Location"].rsplit("/", 1)[1]
    assert client.post(f"/scripts/{script_id}/edit", data=_form(csrf, source=SOURCE + "//\n")).status_code == 303
    assert client.post(f"/scripts/{script_id}/status", data={"csrf_token": csrf, "status": "disabled"}).status_code
    assert client.post(f"/scripts/{script_id}/status", data={"csrf_token": csrf, "status": "active"}).status_code
    assert client.post(f"/scripts/{script_id}/versions/1/rollback", data={"csrf_token": csrf}).status_code == 303
    ran = client.post(f"/scripts/{script_id}/run", data={"csrf_token": csrf, "params": "{}"})
    execution_id = ran.headers["Location"].rsplit("/", 1)[1]
    assert client.post(f"/executions/{execution_id}/rerun", data={"csrf_token": csrf}).status_code == 303
    deleted = client.post(f"/scripts/{script_id}/delete", data={"csrf_token": csrf, "confirm_name": "job"})
    assert deleted.status_code == 303

    made = [e for e in entries(app)[before:] if e["action"].startswith("script.")]
    assert [e["action"] for e in made] == [
        "script.create",
        "script.update",
        "script.disable",
        "script.enable",
        "script.rollback",
        "script.run",
        "script.run",
        "script.delete",
    ]
    for e in made:
        assert e["actor"]["type"] == "user" and e["actor"]["label"] == "ed@acme.io" and e["actor"]["token_id"] is None
        assert e["target"]["id"] == script_id and e["address"] == "127.0.0.1"
        assert e["user_agent"].startswith("Werkzeug/")  # the test client's
    assert made[5]["changes"]["trigger"] == "manual" and made[5]["changes"]["execution"] == execution_id
    assert made[6]["changes"]["again_of"] == execution_id


def test_a_status_change_saved_with_the_form_or_among_other_fields_says_so(app, client, editor, login):
    """The edit form's Status select alone disables a script as the switch does (script.disable);
    a change of status among other fields is a script.update that says how the status went."""
    script_id = client.post("/api/v1/scripts", json=MANUAL, headers=editor).get_json()["id"]
    csrf = login("ed@acme.io")
    before = len(entries(app))
    edit = f"/scripts/{script_id}/edit"
    assert client.post(edit, data=_form(csrf, status="disabled")).status_code == 303
    patch = {"status": "active", "description": "back on"}
    assert client.patch(f"/api/v1/scripts/{script_id}", json=patch, headers=editor).status_code == 200
    assert client.post(edit, data=_form(csrf, status="active", description="back on")).status_code == 303  # as it is

    disable, update = entries(app)[before:]
    assert disable["action"] == "script.disable"
    assert disable["changes"] == {"status": {"old": "active", "new": "disabled"}}
    assert update["action"] == "script.update"  # with the status's old and new, as a switch's
    assert update["changes"] == {
        "fields": ["description", "status"],
        "version": {"old": 1, "new": 1},
        "status": {"old": "disabled", "new": "active"},
    }


def test_secrets_over_rest_pages_and_cli_are_entries_without_their_values(app, client, editor, cli, make_user, login):
    assert client.put("/api/v1/secrets/STRIPE_KEY", json={"value": SECRET_VALUE}, headers=editor).status_code == 201
    assert (
        client.put("/api/v1/secrets/STRIPE_KEY", json={"value": SECRET_VALUE + "2"}, headers=editor).status_code == 200
    )
    assert client.delete("/api/v1/secrets/STRIPE_KEY", headers=editor).status_code == 204
    assert client.delete("/api/v1/secrets/STRIPE_KEY", headers=editor).status_code == 404  # nothing deleted: no entry
    csrf = login("ed@acme.io")
    assert client.post("/secrets", data={"csrf_token": csrf, "name": "PAGE_KEY", "value": SECRET_VALUE}).status_code
    assert client.post("/secrets/PAGE_KEY", data={"csrf_token": csrf, "value": SECRET_VALUE + "3"}).status_code
    assert client.post("/secrets/PAGE_KEY/delete", data={"csrf_token": csrf}).status_code == 303
    assert cli("secrets", "set", "--tenant", "acme", "CLI_KEY", input=SECRET_VALUE + "\n").exit_code == 0
    assert cli("secrets", "delete", "--tenant", "acme", "CLI_KEY").exit_code == 0

    made = [e for e in entries(app) if e["action"].startswith("secret.")]
    assert [(e["action"], e["target"]["label"], e["actor"]["type"], e["changes"]) for e in made] == [
        ("secret.set", "STRIPE_KEY", "token", {"created": True}),
        ("secret.set", "STRIPE_KEY", "token", {"created": False}),
        ("secret.delete", "STRIPE_KEY", "token", None),
        ("secret.set", "PAGE_KEY", "user", {"created": True}),
        ("secret.set", "PAGE_KEY", "user", {"created": False}),
        ("secret.delete", "PAGE_KEY", "user", None),
        ("secret.set", "CLI_KEY", "cli", {"created": True}),
        ("secret.delete", "CLI_KEY", "cli", None),
    ]
    assert made[-1]["actor"]["label"] == "cli" and made[-1]["address"] is None
    assert SECRET_VALUE not in json.dumps(entries(app))


def test_tokens_and_members_through_the_pages_and_the_cli(app, client, admin_session, make_user, cli):
    csrf = admin_session
    make_user("ed@acme.io", "acme", "editor")
    assert client.post("/tokens", data={"csrf_token": csrf, "name": "deploys", "role": "editor"}).status_code == 303
    token_id = _token_id(app, "boss@acme.io")
    assert client.post(f"/tokens/{token_id}/revoke", data={"csrf_token": csrf}).status_code == 303
    assert client.post(f"/tokens/{token_id}/revoke", data={"csrf_token": csrf}).status_code == 303  # already: no entry
    with app.app_context():
        ed = db.session.scalar(sa.select(Membership).join(User).where(User.email == "ed@acme.io"))
        ed_membership, ed_user = ed.id, ed.user_id
    assert client.post(f"/members/{ed_membership}/role", data={"csrf_token": csrf, "role": "viewer"}).status_code == 303
    assert client.post(f"/members/{ed_membership}/role", data={"csrf_token": csrf, "role": "viewer"}).status_code == 303
    assert client.post(f"/members/{ed_membership}/remove", data={"csrf_token": csrf}).status_code == 303
    assert (
        cli(
            "users", "create", "cli@acme.io", "--tenant", "acme", "--role", "viewer", "--password", "pw-123456"
        ).exit_code
        == 0
    )
    assert cli("users", "create", "cli@acme.io", "--tenant", "acme", "--role", "editor").exit_code == 0
    made = cli("tokens", "create", "--tenant", "acme", "--email", "cli@acme.io", "--name", "ci")
    cli_token = _token_id(app, "cli@acme.io")
    assert made.exit_code == 0 and cli("tokens", "revoke", str(cli_token)).exit_code == 0

    got = [e for e in entries(app) if e["action"].split(".")[0] in ("token", "member")]
    summary = [(e["action"], e["actor"]["label"], e["target"]["label"], e["changes"]) for e in got]
    assert summary[0][:3] == ("token.create", "boss@acme.io", "deploys")
    assert summary[0][3] == {"role": "editor", "user": "boss@acme.io", "expires_at": None}
    assert summary[1:] == [
        ("token.revoke", "boss@acme.io", "deploys", {"user": "boss@acme.io"}),
        ("member.update", "boss@acme.io", "ed@acme.io", {"role": {"old": "editor", "new": "viewer"}}),
        ("member.remove", "boss@acme.io", "ed@acme.io", {"role": {"old": "viewer", "new": None}, "tokens_revoked": 0}),
        ("member.add", "cli", "cli@acme.io", {"role": {"old": None, "new": "viewer"}}),
        ("member.update", "cli", "cli@acme.io", {"role": {"old": "viewer", "new": "editor"}}),
        ("token.create", "cli", "ci", {"role": "viewer", "user": "cli@acme.io", "expires_at": None}),
        ("token.revoke", "cli", "ci", {"user": "cli@acme.io"}),
    ]
    assert got[2]["target"] == {"type": "member", "id": str(ed_user), "label": "ed@acme.io", "version": None}
    assert got[0]["target"]["id"] == str(token_id)


def test_accepting_an_invitation_adds_a_member_in_the_name_of_who_accepted(app, client, admin_session, make_user):
    make_user("ann@example.com", "globex", "viewer")
    link = link_of(invite(client, admin_session, "ann@example.com", "editor"))
    ann = app.test_client()
    csrf = csrf_from(ann.get("/login").get_data(as_text=True))
    ann.post("/login", data={"email": "ann@example.com", "password": PASSWORD, "csrf_token": csrf})
    page = ann.get(link)
    assert ann.post(link, data={"csrf_token": csrf_from(page.get_data(as_text=True))}).status_code == 303
    newcomer_link = link_of(invite(client, admin_session, "new@example.com", "viewer"))
    newcomer = app.test_client()
    csrf = csrf_from(newcomer.get(newcomer_link).get_data(as_text=True))
    body = {"csrf_token": csrf, "password": "new-password-1", "confirm": "new-password-1"}
    assert newcomer.post(newcomer_link, data=body).status_code == 303

    added = entries(app, "member.add")
    assert [(e["actor"]["label"], e["target"]["label"], e["changes"]["role"]["new"]) for e in added] == [
        ("ann@example.com", "ann@example.com", "editor"),
        ("new@example.com", "new@example.com", "viewer"),
    ]
    assert {e["tenant_id"] for e in added} == {_tenant_id(app, "acme")}
    assert "new-password-1" not in json.dumps(entries(app))


def _tenant_id(app, name: str) -> int:
    from webapp.models import Tenant

    with app.app_context():
        return db.session.scalar(sa.select(Tenant.id).where(Tenant.name == name))


def test_logins_and_logouts_are_recorded_in_each_tenant_of_the_account(app, client, make_user):
    make_user("both@x.io", "acme", "viewer")
    make_user("both@x.io", "globex", "admin")
    csrf = csrf_from(client.get("/login").get_data(as_text=True))
    wrong = client.post("/login", data={"email": "both@x.io", "password": "not-my-password-77", "csrf_token": csrf})
    assert wrong.status_code == 401
    nobody = client.post("/login", data={"email": "nobody@x.io", "password": "guess-77", "csrf_token": csrf})
    assert nobody.status_code == 401
    right = client.post("/login", data={"email": "both@x.io", "password": PASSWORD, "csrf_token": csrf})
    assert right.status_code == 302
    csrf = csrf_from(client.get("/tenant").get_data(as_text=True))
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 302

    acme, globex = _tenant_id(app, "acme"), _tenant_id(app, "globex")
    got = sorted((e["action"], e["tenant_id"]) for e in entries(app))
    assert got == sorted(
        (action, tenant) for action in ("login.failure", "login.success", "logout") for tenant in (acme, globex)
    )
    for e in entries(app):
        assert e["actor"]["label"] == "both@x.io" and e["target"]["type"] == "user"
    failure = entries(app, "login.failure")[0]
    assert failure["changes"] == {"reason": "wrong password"} and failure["address"] == "127.0.0.1"
    text = json.dumps(entries(app))
    assert "not-my-password-77" not in text and PASSWORD not in text and "nobody@x.io" not in text


def test_a_change_that_fails_leaves_no_entry(app, client, editor):
    created = client.post("/api/v1/scripts", json=MANUAL, headers=editor)
    script_id = created.get_json()["id"]
    count = len(entries(app))
    assert client.post("/api/v1/scripts", json=MANUAL, headers=editor).status_code == 409  # name taken
    other = client.post("/api/v1/scripts", json={**MANUAL, "name": "other"}, headers=editor).get_json()["id"]
    clash = client.patch(f"/api/v1/scripts/{other}", json={"name": "job"}, headers=editor)
    assert clash.status_code == 409
    nothing = client.patch(f"/api/v1/scripts/{script_id}", json={"source": SOURCE}, headers=editor)
    assert nothing.status_code == 200  # no change, no entry
    assert len(entries(app)) == count + 1  # only "other" was created
    # The database refuses a write after the entry was added: both roll back together.
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            db.session.execute(
                sa.text(
                    "CREATE TRIGGER refuse_boom BEFORE INSERT ON scripts WHEN NEW.name = 'boom' "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the database'); END"
                )
            )
        else:
            db.session.execute(
                sa.text(
                    "CREATE FUNCTION refuse_boom() RETURNS trigger AS $$ BEGIN "
                    "IF NEW.name = 'boom' THEN RAISE EXCEPTION 'refused by the database'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            db.session.execute(
                sa.text(
                    "CREATE TRIGGER refuse_boom BEFORE INSERT ON scripts FOR EACH ROW EXECUTE FUNCTION refuse_boom()"
                )
            )
        db.session.commit()
    refused = client.post("/api/v1/scripts", json={**MANUAL, "name": "boom"}, headers=editor)
    assert refused.status_code in (409, 500)
    assert len(entries(app)) == count + 1
    with app.app_context():
        assert db.session.scalar(sa.select(Script.id).where(Script.name == "boom")) is None
        if db.engine.dialect.name == "postgresql":
            db.session.execute(sa.text("DROP TRIGGER refuse_boom ON scripts"))
            db.session.execute(sa.text("DROP FUNCTION refuse_boom()"))
            db.session.commit()


# PostgreSQL only: SQLite has one writer at a time, so two switches cannot overlap there.
@pytest.mark.slow  # starts the PostgreSQL server even when TEST_DATABASES leaves it out
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_switch_that_lost_a_race_changes_nothing_and_records_nothing(app, client, editor):
    """Two admins disable one script at the same moment: one change, one entry. Here the other
    switch holds the script's row (PostgreSQL's row lock) while this PATCH arrives."""
    script_id = client.post("/api/v1/scripts", json=MANUAL, headers=editor).get_json()["id"]
    before = len(entries(app))
    answers = []
    patch = threading.Thread(
        target=lambda: answers.append(
            client.patch(f"/api/v1/scripts/{script_id}", json={"status": "disabled"}, headers=editor)
        )
    )
    with app.app_context():
        row = {"id": script_id}
        with db.engine.connect() as other, db.engine.connect() as watcher:
            other.execute(sa.text("SELECT 1 FROM scripts WHERE id = CAST(:id AS uuid) FOR UPDATE"), row)
            patch.start()
            waiting = sa.text("SELECT count(*) FROM pg_locks WHERE NOT granted")
            eventually(lambda: watcher.execute(waiting).scalar(), 10, "the PATCH waiting for the row")
            other.execute(sa.text("UPDATE scripts SET status = 'disabled' WHERE id = CAST(:id AS uuid)"), row)
            other.commit()
    patch.join(timeout=30)
    assert answers and answers[0].status_code == 200 and answers[0].get_json()["status"] == "disabled"
    assert len(entries(app)) == before  # the other switch's change was not this one's


def test_no_route_changes_an_entry(app):
    """Entries are read over GET only; nothing in the URL map names them with another method."""
    for rule in app.url_map.iter_rules():
        if "audit" in rule.rule or rule.endpoint.startswith("audit.") or "audit" in rule.endpoint:
            assert rule.methods <= {"GET", "HEAD", "OPTIONS"}, (rule.rule, rule.methods)
    root = Path(__file__).resolve().parent.parent
    source = "\n".join(
        (root / p).read_text() for p in ("webapp/audit/views.py", "webapp/api/audit.py", "webapp/audit/queries.py")
    )
    assert not re.search(r"\b(update|delete)\(AuditEntry", source)
