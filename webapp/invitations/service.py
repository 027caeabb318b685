"""Invitations (docs/members.md): an admin offers a role in their tenant to an email address;
whoever holds the one-time link accepts it as that address's account, or creates the account.

The link is shown once and kept only as a SHA-256 digest, like API tokens. An invitation is
pending while it is neither accepted, revoked nor expired *and* the admin who made it is still
an admin of the tenant: removing or demoting an admin voids the links they handed out.
Accepting consumes it with one conditional UPDATE in the same transaction as the membership,
so two parallel accepts cannot both succeed.
"""

import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, exists, select, update
from sqlalchemy.exc import IntegrityError

from webapp.audit.log import member_target, record, user_actor
from webapp.auth.passwords import hash_password
from webapp.auth.roles import ROLES
from webapp.auth.tokens import digest
from webapp.cli import EMAIL
from webapp.extensions import db
from webapp.models import Invitation, Membership, Tenant, User, utcnow

VALID_FOR = timedelta(days=7)


class InvitationError(ValueError):
    def __init__(self, fields: dict[str, str]):
        super().__init__("; ".join(f"{k} {v}" for k, v in fields.items()))
        self.fields = fields


class AccountExists(Exception):
    """The invited address has an account: only that account may accept."""


def normalize_email(raw: str) -> str:
    return raw.strip().lower()


def pending_clause(now: datetime) -> ColumnElement[bool]:
    """SQL: the invitation can still be accepted."""
    inviter_is_admin = exists().where(
        Membership.tenant_id == Invitation.tenant_id,
        Membership.user_id == Invitation.invited_by_id,
        Membership.role == "admin",
    )
    return and_(
        Invitation.accepted_at.is_(None),
        Invitation.revoked_at.is_(None),
        Invitation.expires_at > now,
        inviter_is_admin,
    )


def invite(tenant: Tenant, inviter: User, email: str, role: str) -> tuple[Invitation, str, bool]:
    """A new invitation and its link token (plain text, to show once). The third value says
    whether it replaced a pending invitation of the same address. Whether the address has an
    account anywhere plays no part: the admin's answer must not tell."""
    email = normalize_email(email)
    errors: dict[str, str] = {}
    if not EMAIL.match(email) or len(email) > 254:
        errors["email"] = "is not an email address"
    if role not in ROLES:
        errors["role"] = f"must be one of {', '.join(ROLES)}"
    member = select(Membership.id).join(User).where(Membership.tenant_id == tenant.id, User.email == email)
    if not errors and db.session.scalar(member) is not None:
        errors["email"] = "is already a member of this tenant"
    if errors:
        raise InvitationError(errors)
    now = utcnow()
    replaced = db.session.execute(
        update(Invitation)
        .where(Invitation.tenant_id == tenant.id, Invitation.email == email, pending_clause(now))
        .values(revoked_at=now)
    ).rowcount
    plaintext = secrets.token_urlsafe(32)
    invitation = Invitation(
        tenant=tenant,
        email=email,
        role=role,
        token_hash=digest(plaintext),
        invited_by_id=inviter.id,
        created_at=now,
        expires_at=now + VALID_FOR,
    )
    db.session.add(invitation)
    db.session.commit()
    return invitation, plaintext, bool(replaced)


def find_pending(plaintext: str) -> Invitation | None:
    """The pending invitation of this link; None for an unknown, used, revoked or expired one."""
    wanted = digest(plaintext)
    stmt = select(Invitation).where(Invitation.token_hash == wanted, pending_clause(utcnow()))
    invitation = db.session.scalar(stmt)
    if invitation is None or not hmac.compare_digest(invitation.token_hash, wanted):
        return None
    return invitation


def revoke(invitation: Invitation) -> None:
    if invitation.revoked_at is None and invitation.accepted_at is None:
        invitation.revoked_at = utcnow()
        db.session.commit()


def _consume(invitation: Invitation, user: User) -> bool:
    """Mark the invitation used by `user`, unless it stopped being pending meanwhile (a
    parallel accept, a revoke, its expiry): then False. Not committed."""
    now = utcnow()
    used = db.session.execute(
        update(Invitation)
        .where(Invitation.id == invitation.id, pending_clause(now))
        .values(accepted_at=now, accepted_by_id=user.id)
        .execution_options(synchronize_session=False)
    )
    return used.rowcount == 1


def _join(invitation: Invitation, user: User) -> Membership:
    membership = db.session.scalar(
        select(Membership).where(Membership.tenant_id == invitation.tenant_id, Membership.user_id == user.id)
    )
    if membership is None:  # already a member (added since): keep the role they have
        membership = Membership(user=user, tenant_id=invitation.tenant_id, role=invitation.role)
        db.session.add(membership)
        summary = {"role": {"old": None, "new": invitation.role}, "invitation": invitation.id}
        record(invitation.tenant_id, "member.add", member_target(user), summary, user_actor(user))
    user.last_tenant_id = invitation.tenant_id
    return membership


def accept(invitation: Invitation, user: User) -> Membership | None:
    """`user` (the invited address's account) joins the tenant; None when the invitation was
    used, revoked or expired meanwhile."""
    if user.email != invitation.email:
        raise ValueError("an invitation is accepted only by the invited address's account")
    if not _consume(invitation, user):
        db.session.rollback()
        return None
    membership = _join(invitation, user)
    db.session.commit()
    return membership


def create_account(invitation: Invitation, password: str) -> User | None:
    """Create the invited address's account with `password` and accept for it. Raises
    AccountExists when the address has an account (also one created a moment ago by a
    parallel request); None when the invitation was used, revoked or expired meanwhile."""
    user = User(email=invitation.email, password_hash=hash_password(password))
    db.session.add(user)
    try:
        db.session.flush()
    except IntegrityError as exc:
        db.session.rollback()
        raise AccountExists(invitation.email) from exc
    if not _consume(invitation, user):
        db.session.rollback()
        return None
    _join(invitation, user)
    try:
        db.session.commit()
    except IntegrityError as exc:
        db.session.rollback()
        raise AccountExists(invitation.email) from exc
    return user
