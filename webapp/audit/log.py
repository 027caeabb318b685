"""Writing the audit log (docs/audit.md): one entry per change, added to the change's
own transaction by `record` (the caller commits both, or neither), and retention.

Who acted comes from the request: the principal that `webapp/auth/identity.py`
`current_principal` resolved and keeps in `g` (read from there, not imported: the token service
records through this module, and identity imports the token service), else the logged-in user.
CLI commands say `with acting_as(CLI)`; anything else is `system`.
"""

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import current_app, g, has_request_context, request
from flask_login import current_user
from sqlalchemy import delete, select

from webapp.auth.principal import Principal
from webapp.client_address import client_address
from webapp.extensions import db
from webapp.models import AuditEntry, Membership, Script, User, utcnow

log = logging.getLogger(__name__)
ACTIONS = (
    "script.create",
    "script.update",
    "script.delete",
    "script.enable",
    "script.disable",
    "script.rollback",
    "script.run",
    "secret.set",
    "secret.delete",
    "token.create",
    "token.revoke",
    "member.add",
    "member.update",
    "member.remove",
    "settings.update",
    "login.success",
    "login.failure",
    "logout",
)
USER_AGENT_MAX = 300
PRUNE_BATCH = 5000


@dataclass(frozen=True)
class Actor:
    type: str  # user, token, cli, system
    label: str  # the user's email (a token's user's too), or cli, system
    user_id: int | None = None
    token_id: int | None = None
    token_label: str | None = None


CLI = Actor("cli", "cli")
SYSTEM = Actor("system", "system")


def user_actor(user: User) -> Actor:
    return Actor("user", user.email, user.id)


def principal_actor(principal: Principal) -> Actor:
    if principal.token_id is None:
        return user_actor(principal.user)
    return Actor("token", principal.user.email, principal.user.id, principal.token_id, principal.token_name)


@contextmanager
def acting_as(actor: Actor) -> Iterator[None]:
    """Entries recorded inside name `actor` (the CLI's commands: `with acting_as(CLI)`)."""
    before = g.get("audit_actor")
    g.audit_actor = actor
    try:
        yield
    finally:
        g.audit_actor = before


def current_actor() -> Actor:
    chosen = g.get("audit_actor")
    if chosen is not None:
        return chosen
    principal = g.get("principal") if has_request_context() else None
    if principal is not None:
        return principal_actor(principal)
    if has_request_context() and current_user.is_authenticated:  # a session not acting in a tenant
        return user_actor(current_user._get_current_object())
    return SYSTEM


@dataclass(frozen=True)
class Target:
    type: str  # script, secret, token, member, user, tenant
    id: str
    label: str = ""
    version: int | None = None  # the script version the change made


def script_target(script: Script, version: int | None = None) -> Target:
    """`version`: the version this change made, if it made one."""
    return Target("script", str(script.id), script.name, version)


def member_target(user: User) -> Target:
    return Target("member", str(user.id), user.email)


def record(
    tenant_id: int,
    action: str,
    target: Target,
    changes: Mapping[str, Any] | None = None,
    actor: Actor | None = None,
) -> AuditEntry:
    """Add the entry to the session: it commits with the change, or rolls back with it.
    `changes` holds field names, versions and roles: never a secret value or a password."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    actor = actor or current_actor()
    address = agent = None
    if has_request_context():
        address = client_address(request)
        agent = request.user_agent.string[:USER_AGENT_MAX] or None
    entry = AuditEntry(
        tenant_id=tenant_id,
        created_at=utcnow(),
        actor_type=actor.type,
        actor_user_id=actor.user_id,
        actor_token_id=actor.token_id,
        actor_token_label=(actor.token_label or "")[:100] if actor.type == "token" else None,
        actor_label=actor.label[:254],
        action=action,
        target_type=target.type,
        target_id=target.id[:64],
        target_label=target.label[:254],
        target_version=target.version,
        address=address[:64] if address else None,
        user_agent=agent,
        changes=dict(changes) if changes else None,
    )
    db.session.add(entry)
    return entry


def record_in_users_tenants(user: User, action: str, changes: Mapping[str, Any] | None = None) -> int:
    """Logins and logouts concern every tenant of the user: one entry in each. The count."""
    tenant_ids = db.session.scalars(select(Membership.tenant_id).where(Membership.user_id == user.id)).all()
    target = Target("user", str(user.id), user.email)
    for tenant_id in tenant_ids:
        record(tenant_id, action, target, changes, user_actor(user))
    return len(tenant_ids)


def prune_audit() -> int:
    """Delete entries older than AUDIT_RETENTION_DAYS, a batch per transaction: the only delete."""
    cutoff = utcnow() - timedelta(days=current_app.config["SETTINGS"].audit_retention_days)
    removed = 0
    while True:
        ids = select(AuditEntry.id).where(AuditEntry.created_at < cutoff).limit(PRUNE_BATCH)
        done = db.session.execute(delete(AuditEntry).where(AuditEntry.id.in_(ids))).rowcount or 0
        db.session.commit()
        removed += done
        if done < PRUNE_BATCH:
            break
    if removed:
        log.info("pruned %d audit entries older than the retention period", removed)
    return removed
