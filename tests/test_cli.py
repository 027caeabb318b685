"""Every CLI command of README.md's "Administration", through Flask's CLI runner."""

from datetime import timedelta

import pytest

from tests.conftest import bearer
from webapp.auth.tokens import digest
from webapp.extensions import db
from webapp.models import ApiToken, Membership, Tenant, User, utcnow
from webapp.serializers import iso


@pytest.fixture
def cli(app):
    runner = app.test_cli_runner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(args=list(args), input=input)

    return invoke


def test_tenants_create(cli, app):
    result = cli("tenants", "create", "acme-co")
    assert result.exit_code == 0, result.output
    assert "created tenant acme-co" in result.output
    with app.app_context():
        assert db.session.scalar(db.select(Tenant).where(Tenant.name == "acme-co"))


@pytest.mark.parametrize("name", ["A", "Acme", "acme_co", "x" * 41, "has space"])
def test_tenants_create_rejects_bad_slugs(cli, name):
    result = cli("tenants", "create", name)
    assert result.exit_code != 0
    assert "must match [a-z0-9-]{2,40}" in result.output


def test_tenants_create_twice_is_refused(cli):
    cli("tenants", "create", "acme")
    result = cli("tenants", "create", "acme")
    assert result.exit_code != 0
    assert "already exists" in result.output


def test_users_create_and_add_membership(cli, app):
    cli("tenants", "create", "acme")
    cli("tenants", "create", "globex")
    first = cli("users", "create", "Ann@Example.com", "--tenant", "acme", "--role", "editor", "--password", "pw-123456")
    assert first.exit_code == 0, first.output
    assert "created user ann@example.com (editor in acme)" in first.output
    second = cli("users", "create", "ann@example.com", "--tenant", "globex", "--role", "viewer")
    assert second.exit_code == 0, second.output
    assert "existing user ann@example.com (account created " in second.output
    assert "added to globex as viewer; only the membership changed, the password was not set" in second.output
    third = cli("users", "create", "ann@example.com", "--tenant", "globex", "--role", "admin")
    assert "role in globex changed from viewer to admin; only the membership changed" in third.output
    cli("users", "create", "ann@example.com", "--tenant", "globex", "--role", "viewer")
    with app.app_context():
        user = db.session.scalar(db.select(User).where(User.email == "ann@example.com"))
        roles = {m.tenant.name: m.role for m in user.memberships}
        assert roles == {"acme": "editor", "globex": "viewer"}
        assert "pw-123456" not in user.password_hash
        assert user.password_hash.startswith("scrypt:32768:8:1$")  # the full cost (test users get less)


def test_users_create_refuses_a_password_for_an_existing_user(cli, app, client):
    """An operator who adds an account someone else created (an admin who pre-created it from
    an invitation, say) must not believe it now has the password they typed."""
    cli("tenants", "create", "acme")
    cli("tenants", "create", "globex")
    cli("users", "create", "ann@example.com", "--tenant", "acme", "--role", "editor", "--password", "first-pw-1")
    with app.app_context():
        before = db.session.scalar(db.select(User.password_hash).where(User.email == "ann@example.com"))
    result = cli(
        "users", "create", "ann@example.com", "--tenant", "globex", "--role", "admin", "--password", "second-pw-2"
    )
    assert result.exit_code != 0
    assert "ann@example.com already has an account: nothing changed." in result.output
    assert "users set-password ann@example.com" in result.output
    with app.app_context():
        user = db.session.scalar(db.select(User).where(User.email == "ann@example.com"))
        assert user.password_hash == before
        assert {m.tenant.name for m in user.memberships} == {"acme"}


def test_users_set_password_reads_stdin_and_ends_sessions(cli, app, client):
    from tests.conftest import csrf_from

    cli("tenants", "create", "acme")
    cli("users", "create", "ann@example.com", "--tenant", "acme", "--role", "editor", "--password", "first-pw-1")
    csrf = csrf_from(client.get("/login").get_data(as_text=True))
    form = {"email": "ann@example.com", "csrf_token": csrf}
    assert client.post("/login", data={**form, "password": "first-pw-1"}).status_code == 302
    assert client.get("/").status_code == 200
    result = cli("users", "set-password", "Ann@Example.com", input="brand-new-pw\n")
    assert result.exit_code == 0, result.output
    assert "password set for ann@example.com; their sessions were ended" in result.output
    assert "brand-new-pw" not in result.output
    assert client.get("/").status_code == 302  # logged out
    csrf = csrf_from(client.get("/login").get_data(as_text=True))
    form["csrf_token"] = csrf
    assert client.post("/login", data={**form, "password": "first-pw-1"}).status_code == 401
    assert client.post("/login", data={**form, "password": "brand-new-pw"}).status_code == 302


def test_users_set_password_errors(cli):
    cli("tenants", "create", "acme")
    assert "no user 'who@example.com'" in cli("users", "set-password", "who@example.com", input="long-enough\n").output
    cli("users", "create", "ann@example.com", "--tenant", "acme", "--role", "editor", "--password", "first-pw-1")
    short = cli("users", "set-password", "ann@example.com", input="short\n")
    assert short.exit_code != 0 and "password must be at least 8 characters" in short.output


def test_users_create_errors(cli):
    cli("tenants", "create", "acme")
    assert (
        "no tenant named 'nope'"
        in cli("users", "create", "a@b.io", "--tenant", "nope", "--role", "admin", "--password", "pw-123456").output
    )
    assert "--password is required" in cli("users", "create", "a@b.io", "--tenant", "acme", "--role", "admin").output
    assert (
        "not an email"
        in cli("users", "create", "nope", "--tenant", "acme", "--role", "admin", "--password", "x" * 9).output
    )
    assert (
        "Invalid value"
        in cli("users", "create", "a@b.io", "--tenant", "acme", "--role", "boss", "--password", "x" * 9).output
    )


def test_a_cli_token_is_a_viewer_unless_a_role_is_given(cli, client):
    cli("tenants", "create", "acme")
    cli("users", "create", "ann@example.com", "--tenant", "acme", "--role", "editor", "--password", "pw-123456")
    script = {"name": "nightly", "type": "manual", "source": "function main() { return 1 }"}

    def create_with(*role: str) -> int:
        made = cli("tokens", "create", "--tenant", "acme", "--email", "ann@example.com", *role)
        assert made.exit_code == 0, made.output
        return client.post("/api/v1/scripts", json=script, headers={"Authorization": f"Bearer {made.output.strip()}"})

    refused = create_with()
    assert refused.status_code == 403, refused.get_json()
    created = create_with("--role", "editor")
    assert created.status_code == 201, created.get_json()


def test_tokens_create_list_revoke(cli, app, client):
    cli("tenants", "create", "acme")
    cli("users", "create", "ann@example.com", "--tenant", "acme", "--role", "editor", "--password", "pw-123456")
    result = cli("tokens", "create", "--tenant", "acme", "--email", "ann@example.com", "--name", "deploys")
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert token.startswith("srt_") and "\n" not in token  # the token alone on stdout
    with app.app_context():
        stored = db.session.scalar(db.select(ApiToken))
        assert stored.token_hash == digest(token) and token not in stored.token_hash
        assert stored.role == "viewer"  # docs/api.md: new tokens default to viewer, whatever the user's role
    assert client.get("/api/v1/scripts", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    listing = cli("tokens", "list", "--tenant", "acme")
    assert listing.exit_code == 0
    row = listing.output.splitlines()[1].split("\t")
    assert row[:4] == [str(stored.id), "deploys", "ann@example.com", "viewer"]
    assert row[5] != "never"  # last used was recorded by the call above
    revoked = cli("tokens", "revoke", str(stored.id))
    assert revoked.exit_code == 0 and f"revoked token {stored.id}" in revoked.output
    assert client.get("/api/v1/scripts", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_tokens_role_never_above_the_user(cli):
    cli("tenants", "create", "acme")
    cli("users", "create", "v@example.com", "--tenant", "acme", "--role", "viewer", "--password", "pw-123456")
    result = cli("tokens", "create", "--tenant", "acme", "--email", "v@example.com", "--role", "admin")
    assert result.exit_code != 0
    assert "higher than the user's role viewer" in result.output


def test_tokens_create_with_an_expiry(cli, app, client):
    cli("tenants", "create", "acme")
    cli("users", "create", "ann@example.com", "--tenant", "acme", "--role", "editor", "--password", "pw-123456")
    refused = cli("tokens", "create", "--tenant", "acme", "--email", "ann@example.com", "--expires-in-days", "0")
    assert refused.exit_code != 0 and "--expires-in-days" in refused.output
    before = utcnow()
    result = cli("tokens", "create", "--tenant", "acme", "--email", "ann@example.com", "--expires-in-days", "7")
    assert result.exit_code == 0, result.output
    with app.app_context():
        expires_at = db.session.scalar(db.select(ApiToken.expires_at))
    assert before + timedelta(days=7) <= expires_at <= utcnow() + timedelta(days=7)
    listing = cli("tokens", "list", "--tenant", "acme").output.splitlines()
    assert listing[0].split("\t")[-1] == "expires" and listing[1].split("\t")[-1] == iso(expires_at)
    assert client.get("/api/v1/scripts", headers=bearer(result.output.strip())).status_code == 200


def test_tokens_revoke_unknown(cli):
    result = cli("tokens", "revoke", "999")
    assert result.exit_code != 0 and "no token with id 999" in result.output


def test_demo_only_on_empty_database(cli, app):
    first = cli("demo")
    assert "demo login: admin@example.com / " in first.output
    password = first.output.split(" / ")[1].split()[0]
    second = cli("demo")
    assert "no demo account created" in second.output
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(Membership)) == 1
    page = app.test_client()
    from tests.conftest import csrf_from

    token = csrf_from(page.get("/login").get_data(as_text=True))
    response = page.post("/login", data={"email": "admin@example.com", "password": password, "csrf_token": token})
    assert response.status_code == 302
