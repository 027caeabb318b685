"""API tokens: created once in plain text, stored as a SHA-256 digest, checked in constant time."""

import hashlib
import hmac
import secrets
from datetime import timedelta

from sqlalchemy import bindparam, select

from webapp.auth.identity import Principal
from webapp.extensions import db
from webapp.models import ApiToken, Membership, Tenant, User, utcnow
from webapp.permissions import ROLE_RANK, lower_role

TOKEN_PREFIX = "srt_"  # noqa: S105 - a marker, not a secret
_LAST_USED_RESOLUTION = timedelta(seconds=60)


class TokenError(ValueError):
    pass


def digest(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def create_token(tenant: Tenant, user: User, name: str = "", role: str | None = None) -> tuple[ApiToken, str]:
    membership = db.session.scalar(
        select(Membership).where(Membership.tenant_id == tenant.id, Membership.user_id == user.id)
    )
    if membership is None:
        raise TokenError(f"{user.email} is not a member of tenant {tenant.name}")
    role = role or membership.role
    if role not in ROLE_RANK:
        raise TokenError(f"role must be one of {', '.join(ROLE_RANK)}, got {role!r}")
    if ROLE_RANK[role] > ROLE_RANK[membership.role]:
        raise TokenError(f"role {role} is higher than the user's role {membership.role} in {tenant.name}")
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(tenant=tenant, user=user, name=name.strip()[:100], role=role, token_hash=digest(plaintext))
    db.session.add(token)
    db.session.commit()
    return token, plaintext


# One query: the token with its user, tenant and the user's membership there (a user who left
# the tenant has no membership row: the token dies with it). Built once: every API call runs it.
_LOOKUP = (
    select(ApiToken, User, Tenant, Membership.role)
    .join(User, User.id == ApiToken.user_id)
    .join(Tenant, Tenant.id == ApiToken.tenant_id)
    .join(Membership, (Membership.tenant_id == ApiToken.tenant_id) & (Membership.user_id == ApiToken.user_id))
    .where(ApiToken.token_hash == bindparam("token_hash"))
)


def authenticate(plaintext: str) -> Principal | None:
    wanted = digest(plaintext)
    found = db.session.execute(_LOOKUP, {"token_hash": wanted}).one_or_none()
    if found is None:
        return None
    token, user, tenant, member_role = found
    if token.revoked_at is not None or not hmac.compare_digest(token.token_hash, wanted):
        return None
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at > _LAST_USED_RESOLUTION:
        token.last_used_at = now
        db.session.commit()
    return Principal(user=user, tenant=tenant, role=lower_role(token.role, member_role), token=token)


def revoke(token: ApiToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        db.session.commit()
