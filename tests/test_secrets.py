"""Secrets in-process (docs/secrets.md): REST, CLI and the /secrets page; encrypted at rest; key
rotation; a bad SECRETS_KEY; tenant isolation. Runs that read secrets: tests/test_secrets_runs.py."""

from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from tests.conftest import bearer
from webapp.app import create_app
from webapp.extensions import db
from webapp.models import Secret, Tenant
from webapp.secret_store import service
from webapp.secret_store.keys import SecretsKeyError, SecretUnreadable

VALUE = "sk_live_51H-correct-horse-battery-staple"


@pytest.fixture
def cli(app):
    runner = app.test_cli_runner()
    return lambda *args, input=None: runner.invoke(args=list(args), input=input)


@pytest.fixture
def viewer(make_user, make_token) -> dict[str, str]:
    make_user("vi@acme.io", "acme", "viewer")
    return bearer(make_token("vi@acme.io"))


@pytest.fixture
def other_tenant(make_user, make_token) -> dict[str, str]:
    make_user("eve@globex.io", "globex", "editor")
    return bearer(make_token("eve@globex.io", "globex"))


def _read(app, tenant: str, name: str) -> str | None:
    with app.app_context():
        tenant_id = db.session.scalar(db.select(Tenant.id).where(Tenant.name == tenant))
        return service.read_for_run(tenant_id, name)


def test_rest_round_trip_never_answers_the_value(client, app, editor):
    created = client.put("/api/v1/secrets/STRIPE_KEY", json={"value": VALUE}, headers=editor)
    assert created.status_code == 201
    assert created.get_json()["name"] == "STRIPE_KEY"
    assert created.get_json()["updated_by"] == "ed@acme.io"
    replaced = client.put("/api/v1/secrets/STRIPE_KEY", json={"value": VALUE + "-2"}, headers=editor)
    assert replaced.status_code == 200
    listed = client.get("/api/v1/secrets", headers=editor)
    assert listed.get_json()["total"] == 1
    assert set(listed.get_json()["items"][0]) == {"name", "created_at", "updated_at", "updated_by"}
    for response in (created, replaced, listed):
        assert VALUE not in response.get_data(as_text=True)
    assert _read(app, "acme", "STRIPE_KEY") == VALUE + "-2"
    assert client.delete("/api/v1/secrets/STRIPE_KEY", headers=editor).status_code == 204
    assert client.delete("/api/v1/secrets/STRIPE_KEY", headers=editor).status_code == 404
    assert _read(app, "acme", "STRIPE_KEY") is None


@pytest.mark.parametrize(
    ("name", "body", "field"),
    [
        ("lower", {"value": "x"}, "name"),
        ("1ST", {"value": "x"}, "name"),
        ("A" * 65, {"value": "x"}, "name"),
        ("OK", {"value": "x" * (16 * 1024 + 1)}, "value"),
        ("OK", {"value": 42}, "value"),
        ("OK", {}, "value"),
    ],
)
def test_bad_names_and_values_are_422_naming_the_field(client, editor, name, body, field):
    response = client.put(f"/api/v1/secrets/{name}", json=body, headers=editor)
    assert response.status_code == 422
    assert field in response.get_json()["error"]["fields"]


def test_the_largest_value_is_accepted(client, app, editor):
    value = "é" * (8 * 1024)  # 16 KiB of UTF-8
    assert client.put("/api/v1/secrets/BIG", json={"value": value}, headers=editor).status_code == 201
    assert _read(app, "acme", "BIG") == value


def test_viewers_see_names_only_and_cannot_write(client, editor, viewer):
    client.put("/api/v1/secrets/API_KEY", json={"value": VALUE}, headers=editor)
    assert client.get("/api/v1/secrets", headers=viewer).get_json()["items"] == [{"name": "API_KEY"}]
    assert client.put("/api/v1/secrets/API_KEY", json={"value": "x"}, headers=viewer).status_code == 403
    assert client.delete("/api/v1/secrets/API_KEY", headers=viewer).status_code == 403


def test_another_tenant_sees_nothing(client, app, editor, other_tenant):
    client.put("/api/v1/secrets/API_KEY", json={"value": VALUE}, headers=editor)
    assert client.get("/api/v1/secrets", headers=other_tenant).get_json()["items"] == []
    assert client.delete("/api/v1/secrets/API_KEY", headers=other_tenant).status_code == 404
    # Its own secret of the same name is its own: acme's is untouched.
    assert (
        client.put("/api/v1/secrets/API_KEY", json={"value": "globex-value"}, headers=other_tenant).status_code == 201
    )
    assert _read(app, "acme", "API_KEY") == VALUE
    assert _read(app, "globex", "API_KEY") == "globex-value"


def test_cli_round_trip_reads_the_value_from_stdin(cli, app, make_user):
    make_user("ed@acme.io", "acme", "editor")
    result = cli("secrets", "set", "--tenant", "acme", "DB_PASSWORD", input=VALUE + "\n")
    assert result.exit_code == 0, result.output
    assert "created secret DB_PASSWORD" in result.output
    assert _read(app, "acme", "DB_PASSWORD") == VALUE
    assert "replaced" in cli("secrets", "set", "--tenant", "acme", "DB_PASSWORD", input="new-value").output
    listed = cli("secrets", "list", "--tenant", "acme")
    assert listed.exit_code == 0 and "DB_PASSWORD\t" in listed.output and "\tcli" in listed.output
    assert VALUE not in listed.output and "new-value" not in listed.output
    assert cli("secrets", "delete", "--tenant", "acme", "DB_PASSWORD").exit_code == 0
    missing = cli("secrets", "delete", "--tenant", "acme", "DB_PASSWORD")
    assert missing.exit_code != 0 and "no secret" in missing.output
    bad = cli("secrets", "set", "--tenant", "acme", "bad-name", input="x")
    assert bad.exit_code != 0 and "name" in bad.output


def test_the_page_adds_replaces_and_deletes_and_never_shows_a_value(client, app, editor_session):
    page = client.get("/secrets")
    assert page.status_code == 200 and "No secrets yet" in page.get_data(as_text=True)
    added = client.post("/secrets", data={"name": "SMTP_PASSWORD", "value": VALUE, "csrf_token": editor_session})
    assert added.status_code == 303
    shown = client.get("/secrets").get_data(as_text=True)
    assert "SMTP_PASSWORD" in shown and "Secret SMTP_PASSWORD saved" in shown and VALUE not in shown
    again = client.post("/secrets", data={"name": "SMTP_PASSWORD", "value": "x", "csrf_token": editor_session})
    assert again.status_code == 422 and "exists already" in again.get_data(as_text=True)
    oversize = client.post("/secrets/SMTP_PASSWORD", data={"value": "y" * 20000, "csrf_token": editor_session})
    assert oversize.status_code == 422 and "y" * 100 not in oversize.get_data(as_text=True)
    replaced = client.post("/secrets/SMTP_PASSWORD", data={"value": "v2-value", "csrf_token": editor_session})
    assert replaced.status_code == 303
    assert _read(app, "acme", "SMTP_PASSWORD") == "v2-value"
    assert "v2-value" not in client.get("/secrets").get_data(as_text=True)
    assert client.post("/secrets/SMTP_PASSWORD/delete", data={"csrf_token": editor_session}).status_code == 303
    assert client.post("/secrets/SMTP_PASSWORD/delete", data={"csrf_token": editor_session}).status_code == 404
    assert client.post("/secrets", data={"name": "NO_CSRF", "value": "x"}).status_code == 400


def test_the_page_shows_viewers_names_only(client, app, make_user, login, editor):
    client.put("/api/v1/secrets/API_KEY", json={"value": VALUE}, headers=editor)
    make_user("vi@acme.io", "acme", "viewer")
    csrf = login("vi@acme.io")
    page = client.get("/secrets").get_data(as_text=True)
    assert "API_KEY" in page and "Updated by" not in page and "Add a secret" not in page
    assert client.post("/secrets", data={"name": "X_KEY", "value": "x", "csrf_token": csrf}).status_code == 403


def test_values_are_encrypted_at_rest(client, app, editor, settings):
    client.put("/api/v1/secrets/API_KEY", json={"value": VALUE}, headers=editor)
    with app.app_context():
        raw = db.session.execute(text("SELECT name, token FROM secrets")).all()
        assert raw[0].name == "API_KEY" and VALUE not in raw[0].token
        db.session.remove()
        db.engine.dispose()
    if settings.database_url.startswith("sqlite:///"):
        assert VALUE.encode() not in Path(settings.database_url.removeprefix("sqlite:///")).read_bytes()
    else:
        dump = _pg_dump(settings.database_url)
        assert "API_KEY" in dump and VALUE not in dump


def _pg_dump(database_url: str) -> str:
    """The whole database as `pg_dump` writes it (the backup an operator would keep)."""
    import subprocess

    from sqlalchemy.engine import make_url

    from tests.services import PG_BIN

    url = make_url(database_url)
    command = [str(PG_BIN / "pg_dump"), "-h", url.host, "-p", str(url.port), "-U", url.username, url.database]
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=60).stdout


def _app_with_keys(settings, *keys: bytes):
    app = create_app(replace(settings, secrets_key=",".join(k.decode() for k in keys)))
    app.config.update(TESTING=True)
    return app


def test_rotation_with_two_keys_then_dropping_the_old_keeps_every_value(app, settings, editor):
    old, new = Fernet.generate_key(), Fernet.generate_key()
    names = [f"KEY_{i}" for i in range(7)]
    before = _app_with_keys(settings, old)
    with before.app_context():
        tenant_id = db.session.scalar(db.select(Tenant.id).where(Tenant.name == "acme"))
        for name in names:
            service.put(tenant_id, name, f"value of {name}", None)
    both = _app_with_keys(settings, new, old)
    with both.app_context():
        assert service.read_for_run(tenant_id, names[0]) == "value of KEY_0"  # the old key still decrypts
        report = service.rotate(batch=3)
        assert (report.rotated, report.current, report.unreadable) == (7, 0, [])
        assert service.rotate().current == 7  # a re-run has nothing left to do
    after = _app_with_keys(settings, new)
    with after.app_context():
        assert [service.read_for_run(tenant_id, n) for n in names] == [f"value of {n}" for n in names]


def test_an_interrupted_rotation_stays_readable_and_a_rerun_finishes_it(app, settings, editor):
    old, new = Fernet.generate_key(), Fernet.generate_key()
    with _app_with_keys(settings, old).app_context():
        tenant_id = db.session.scalar(db.select(Tenant.id).where(Tenant.name == "acme"))
        for i in range(6):
            service.put(tenant_id, f"KEY_{i}", f"value {i}", None)
    both = _app_with_keys(settings, new, old)
    with both.app_context():
        # Stopped after its first batch: half the rows under the new key, half under the old.
        first_batch = db.session.scalars(db.select(Secret).order_by(Secret.id).limit(3))
        for secret in first_batch:
            secret.token = Fernet(new).encrypt(service.read_for_run(tenant_id, secret.name).encode()).decode()
        db.session.commit()
        assert [service.read_for_run(tenant_id, f"KEY_{i}") for i in range(6)] == [f"value {i}" for i in range(6)]
        report = service.rotate()
        assert (report.rotated, report.current) == (3, 3)
    with _app_with_keys(settings, new).app_context():
        assert [service.read_for_run(tenant_id, f"KEY_{i}") for i in range(6)] == [f"value {i}" for i in range(6)]


def test_a_value_no_key_opens_is_an_error_and_is_never_overwritten(app, settings, editor, cli):
    with _app_with_keys(settings, Fernet.generate_key()).app_context():
        tenant_id = db.session.scalar(db.select(Tenant.id).where(Tenant.name == "acme"))
        service.put(tenant_id, "LOST", "lost value", None)
        token = db.session.scalar(db.select(Secret.token))
    with app.app_context(), pytest.raises(SecretUnreadable):  # the instance key did not encrypt it
        service.read_for_run(tenant_id, "LOST")
    result = cli("secrets", "rotate-key")
    assert result.exit_code != 0 and "LOST (tenant id" in result.output
    with app.app_context():
        assert db.session.scalar(db.select(Secret.token)) == token


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not-a-key", "SECRETS_KEY entry 1 of 1 is not a Fernet key"),
        ("{good},short", "SECRETS_KEY entry 2 of 2 is not a Fernet key"),
        ("{good},", "SECRETS_KEY entry 2 of 2 is empty"),
        (" ", "SECRETS_KEY is empty"),
    ],
)
def test_a_bad_secrets_key_stops_the_app_naming_the_entry(settings, raw, message):
    good = Fernet.generate_key().decode()
    with pytest.raises(SecretsKeyError) as caught:
        create_app(replace(settings, secrets_key=raw.replace("{good}", good)))
    assert message in str(caught.value)
    assert good not in str(caught.value) and "short" not in str(caught.value)


def test_every_process_refuses_a_bad_secrets_key(settings):
    import subprocess
    import sys

    env = {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "SECRETS_KEY": "oops",
        "PATH": "/usr/bin:/bin",
    }
    for module in (["-m", "flask", "--app", "wsgi", "secrets", "list", "--tenant", "x"], ["-m", "worker"]):
        done = subprocess.run([sys.executable, *module], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        assert "SECRETS_KEY entry 1 of 1 is not a Fernet key" in done.stderr
        assert "oops" not in done.stderr.replace("SECRETS_KEY", "")
