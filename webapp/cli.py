"""`flask --app wsgi …` commands (README.md, "Administration")."""

import re
import secrets
import sys
from pathlib import Path

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import func, select

from webapp import devtools
from webapp.audit.log import CLI, acting_as, member_target, record
from webapp.auth import tokens as token_service
from webapp.auth.passwords import MIN_LENGTH, hash_password, set_password
from webapp.auth.roles import ROLES
from webapp.extensions import db
from webapp.models import ApiToken, Membership, Tenant, User
from webapp.secret_store import service as secret_service
from webapp.serializers import iso

TENANT_NAME = re.compile(r"^[a-z0-9-]{2,40}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DEMO_TENANT, DEMO_EMAIL = "demo", "admin@example.com"

tenants_cli = AppGroup("tenants", help="Manage tenants.")
users_cli = AppGroup("users", help="Manage users.")
tokens_cli = AppGroup("tokens", help="Manage API tokens.")
secrets_cli = AppGroup("secrets", help="Manage secrets (values are never printed).")


def _tenant(name: str) -> Tenant:
    tenant = db.session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        raise click.ClickException(f"no tenant named {name!r}")
    return tenant


@tenants_cli.command("create")
@click.argument("name")
def create_tenant(name: str) -> None:
    """Create tenant NAME (a slug: a-z, 0-9 and -, 2 to 40 characters)."""
    if not TENANT_NAME.match(name):
        raise click.ClickException(f"tenant name {name!r} must match [a-z0-9-]{{2,40}}")
    if db.session.scalar(select(Tenant).where(Tenant.name == name)):
        raise click.ClickException(f"tenant {name!r} already exists")
    db.session.add(Tenant(name=name))
    db.session.commit()
    click.echo(f"created tenant {name}")


def add_user(email: str, tenant: Tenant, role: str, password: str | None) -> tuple[User, bool, str | None]:
    """Create the user (or find it) and give it `role` in `tenant`. Returns (user, created,
    the role it had there before or None). An existing user's password is never touched: a
    password given for one is refused, nothing changed."""
    user = db.session.scalar(select(User).where(User.email == email))
    created = user is None
    if user is None:
        if not password:
            raise click.ClickException("--password is required for a new user")
        user = User(email=email, password_hash=hash_password(password))
        db.session.add(user)
    elif password is not None:
        raise click.ClickException(
            f"{email} already has an account: nothing changed. This command does not change an existing "
            f"account's password; drop --password to change only the membership, and use "
            f"`users set-password {email}` to set the password."
        )
    membership = (
        db.session.scalar(select(Membership).where(Membership.tenant_id == tenant.id, Membership.user_id == user.id))
        if user.id
        else None
    )
    before = membership.role if membership else None
    if membership is None:
        db.session.add(Membership(user=user, tenant=tenant, role=role))
    else:
        membership.role = role
    if before != role:
        db.session.flush()  # a new user's id, for the entry
        action = "member.add" if before is None else "member.update"
        record(tenant.id, action, member_target(user), {"role": {"old": before, "new": role}}, CLI)
    db.session.commit()
    return user, created, before


@users_cli.command("create")
@click.argument("email")
@click.option("--tenant", "tenant_name", required=True, help="Tenant name.")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--password", help="The new user's password. Refused for an existing user.")
def create_user(email: str, tenant_name: str, role: str, password: str | None) -> None:
    """Create user EMAIL with ROLE in a tenant. For an existing user, adds or changes only the
    membership (its password stays as it is)."""
    email = email.strip().lower()
    if not EMAIL.match(email) or len(email) > 254:
        raise click.ClickException(f"{email!r} is not an email address")
    if password is not None and len(password) < MIN_LENGTH:
        raise click.ClickException(f"password must be at least {MIN_LENGTH} characters")
    tenant = _tenant(tenant_name)
    user, created, before = add_user(email, tenant, role, password)
    if created:
        click.echo(f"created user {user.email} ({role} in {tenant.name})")
        return
    if before is None:
        change = f"added to {tenant.name} as {role}"
    elif before == role:
        change = f"already {role} in {tenant.name}"
    else:
        change = f"role in {tenant.name} changed from {before} to {role}"
    click.echo(
        f"existing user {user.email} (account created {user.created_at:%Y-%m-%d %H:%M} UTC): {change}; "
        "only the membership changed, the password was not set"
    )


@users_cli.command("set-password")
@click.argument("email")
def set_user_password(email: str) -> None:
    """Set user EMAIL's password, read from stdin, and end all of the user's sessions."""
    user = db.session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise click.ClickException(f"no user {email!r}")
    if sys.stdin.isatty():
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < MIN_LENGTH:
        raise click.ClickException(f"password must be at least {MIN_LENGTH} characters")
    set_password(user, password)
    db.session.commit()
    click.echo(f"password set for {user.email}; their sessions were ended")


@tokens_cli.command("create")
@click.option("--tenant", "tenant_name", required=True)
@click.option("--email", required=True)
@click.option("--name", "label", default="", help="A label for the token.")
@click.option("--role", type=click.Choice(ROLES), help="Default: viewer. At most the user's role in the tenant.")
@click.option(
    "--expires-in-days",
    type=click.IntRange(1, token_service.MAX_EXPIRES_IN_DAYS),
    help="The token stops working after this many days. Default: never.",
)
def create_token(tenant_name: str, email: str, label: str, role: str | None, expires_in_days: int | None) -> None:
    """Create an API token; prints the token alone (shown once, stored hashed)."""
    tenant = _tenant(tenant_name)
    user = db.session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise click.ClickException(f"no user {email!r}")
    try:
        with acting_as(CLI):
            _, plaintext = token_service.create_token(tenant, user, label, role, expires_in_days)
    except token_service.TokenError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(plaintext)


@tokens_cli.command("list")
@click.option("--tenant", "tenant_name", required=True)
def list_tokens(tenant_name: str) -> None:
    """List the tenant's tokens: id, label, user, role, created, last used, revoked, expires."""
    tenant = _tenant(tenant_name)
    rows = db.session.scalars(select(ApiToken).where(ApiToken.tenant_id == tenant.id).order_by(ApiToken.id))
    click.echo("id\tlabel\tuser\trole\tcreated\tlast_used\trevoked\texpires")
    for t in rows:
        click.echo(
            f"{t.id}\t{t.name or '-'}\t{t.user.email}\t{t.role}\t{iso(t.created_at)}\t"
            f"{iso(t.last_used_at) or 'never'}\t{iso(t.revoked_at) or 'no'}\t{iso(t.expires_at) or 'never'}"
        )


@tokens_cli.command("revoke")
@click.argument("token_id", type=int)
def revoke_token(token_id: int) -> None:
    """Revoke token ID."""
    token = db.session.get(ApiToken, token_id)
    if token is None:
        raise click.ClickException(f"no token with id {token_id}")
    with acting_as(CLI):
        token_service.revoke(token)
    click.echo(f"revoked token {token_id}")


@secrets_cli.command("set")
@click.option("--tenant", "tenant_name", required=True)
@click.argument("name")
def set_secret(tenant_name: str, name: str) -> None:
    """Set or replace secret NAME; the value is read from stdin (never from the command line)."""
    tenant = _tenant(tenant_name)
    if sys.stdin.isatty():
        value = click.prompt(f"Value of {name}", hide_input=True)
    else:
        value = sys.stdin.read().removesuffix("\n").removesuffix("\r")  # `echo` adds a newline
    try:
        with acting_as(CLI):
            created = secret_service.put(tenant.id, name, value, None)
    except secret_service.SecretInvalid as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{'created' if created else 'replaced'} secret {name} in {tenant.name}")


@secrets_cli.command("list")
@click.option("--tenant", "tenant_name", required=True)
def list_secrets(tenant_name: str) -> None:
    """List the tenant's secrets: name, created, updated, updated by (never values)."""
    tenant = _tenant(tenant_name)
    click.echo("name\tcreated\tupdated\tupdated_by")
    for s in db.session.scalars(secret_service.secrets_stmt(tenant.id)):
        updated_by = s.updated_by.email if s.updated_by else "cli"
        click.echo(f"{s.name}\t{iso(s.created_at)}\t{iso(s.updated_at)}\t{updated_by}")


@secrets_cli.command("delete")
@click.option("--tenant", "tenant_name", required=True)
@click.argument("name")
def delete_secret(tenant_name: str, name: str) -> None:
    """Delete secret NAME."""
    tenant = _tenant(tenant_name)
    with acting_as(CLI):
        removed = secret_service.remove(tenant.id, name)
    if not removed:
        raise click.ClickException(f"no secret {name!r} in {tenant.name}")
    click.echo(f"deleted secret {name} from {tenant.name}")


@secrets_cli.command("rotate-key")
def rotate_key() -> None:
    """Re-encrypt every secret with the first key of SECRETS_KEY (batched; safe to re-run)."""
    report = secret_service.rotate()
    click.echo(f"re-encrypted {report.rotated} secrets; {report.current} were already under the first key")
    if report.unreadable:
        names = ", ".join(f"{name} (tenant id {tenant_id})" for tenant_id, name in report.unreadable)
        raise click.ClickException(
            f"{len(report.unreadable)} secrets open with no key of SECRETS_KEY and were left as they are: {names}"
        )


@click.command("demo")
@click.option("--login-file", type=click.Path(dir_okay=False), help="Also write the login to this file (mode 600).")
@with_appcontext
def create_demo(login_file: str | None) -> None:
    """On an empty database, create the demo tenant and its admin, and print the login."""
    if db.session.scalar(select(func.count()).select_from(User)):
        click.echo("database has users already: no demo account created")
        return
    password = secrets.token_urlsafe(9)
    tenant = Tenant(name=DEMO_TENANT)
    db.session.add(tenant)
    add_user(DEMO_EMAIL, tenant, "admin", password)
    line = f"demo login: {DEMO_EMAIL} / {password}  (tenant {DEMO_TENANT})"
    if login_file:
        path = Path(login_file)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(line + "\n")
    click.echo(line)


def register_cli(app: Flask) -> None:
    for command in (tenants_cli, users_cli, tokens_cli, secrets_cli, create_demo):
        app.cli.add_command(command)
    devtools.register(app)
