"""API tokens: created once in plain text, stored as a SHA-256 digest, checked in constant time.

Endpoint calls are hot, so each web process remembers the callers of the tokens it checked
(CallerCache) for a few seconds. Any commit that changes a token, membership, user or tenant,
in any process, sets a new AUTH_VERSION_KEY in Redis; every endpoint call reads it and a new
value empties the cache, so a revoked token or a removed member is refused at once.
"""

import hashlib
import hmac
import logging
import secrets
import threading
import time
import uuid
from datetime import timedelta

from flask import Flask, current_app
from redis.exceptions import RedisError
from sqlalchemy import bindparam, event, inspect, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import ORMExecuteState, Session

from webapp.audit.log import Target, record
from webapp.auth.principal import Caller, Principal
from webapp.auth.roles import ROLE_RANK, lower_role
from webapp.extensions import db
from webapp.models import ApiToken, Membership, Tenant, User, utcnow
from webapp.redis_client import get_redis
from webapp.serializers import iso

log = logging.getLogger(__name__)
TOKEN_PREFIX = "srt_"  # noqa: S105 - a marker, not a secret
_LAST_USED_RESOLUTION = timedelta(seconds=60)
AUTH_VERSION_KEY = "sr:auth:version"
CACHE_SECONDS = 5.0  # the longest a cached caller lives should an announcement be lost
CACHE_MAX_ENTRIES = 10_000
STALE_SECONDS = 60.0  # how long past its time a caller may serve while the database is unreachable
MAX_EXPIRES_IN_DAYS = 3650


class TokenError(ValueError):
    def __init__(self, message: str, field: str = "role") -> None:
        super().__init__(message)
        self.field = field  # the form field or request member at fault


def digest(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def parse_expires_in_days(raw: str | None) -> int | None:
    """A form's or the CLI's `expires_in_days`: blank means the token never expires."""
    if raw is None or not raw.strip():
        return None
    try:
        return int(raw.strip())
    except ValueError:
        raise TokenError("must be a whole number of days, or empty for never", "expires_in_days") from None


DEFAULT_ROLE = "viewer"


def create_token(
    tenant: Tenant, user: User, name: str = "", role: str | None = None, expires_in_days: int | None = None
) -> tuple[ApiToken, str]:
    membership = db.session.scalar(
        select(Membership).where(Membership.tenant_id == tenant.id, Membership.user_id == user.id)
    )
    if membership is None:
        raise TokenError(f"{user.email} is not a member of tenant {tenant.name}")
    role = role or DEFAULT_ROLE  # least privilege unless asked (docs/api.md)
    if role not in ROLE_RANK:
        raise TokenError(f"role must be one of {', '.join(ROLE_RANK)}, got {role!r}")
    if ROLE_RANK[role] > ROLE_RANK[membership.role]:
        raise TokenError(f"role {role} is higher than the user's role {membership.role} in {tenant.name}")
    if expires_in_days is not None and not 1 <= expires_in_days <= MAX_EXPIRES_IN_DAYS:
        raise TokenError(f"must be between 1 and {MAX_EXPIRES_IN_DAYS} days, or empty for never", "expires_in_days")
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires_at = utcnow() + timedelta(days=expires_in_days) if expires_in_days is not None else None
    token = ApiToken(
        tenant=tenant,
        user=user,
        name=name.strip()[:100],
        role=role,
        token_hash=digest(plaintext),
        expires_at=expires_at,
    )
    db.session.add(token)
    db.session.flush()  # its id, for the entry
    record(
        tenant.id,
        "token.create",
        token_target(token),
        {"role": role, "user": user.email, "expires_at": iso(expires_at)},
    )
    db.session.commit()
    return token, plaintext


def token_target(token: ApiToken) -> Target:
    return Target("token", str(token.id), token.name or f"token {token.id}")


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
    now = utcnow()
    if token.revoked_at is not None or token.expired(now) or not hmac.compare_digest(token.token_hash, wanted):
        return None
    if token.last_used_at is None or now - token.last_used_at > _LAST_USED_RESOLUTION:
        token.last_used_at = now
        db.session.commit()
    role = lower_role(token.role, member_role)
    return Principal(
        user=user, tenant=tenant, role=role, expires_at=token.expires_at, token_id=token.id, token_name=token.name
    )


def revoke(token: ApiToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        record(token.tenant_id, "token.revoke", token_target(token), {"user": token.user.email})
        db.session.commit()


class CallerCache:
    """Token digest -> its Caller, for CACHE_SECONDS, while AUTH_VERSION_KEY is unchanged.
    A refused token is never cached: a token made a moment ago works at once. A token's expiry
    changes nothing in the database, so nothing announces it: every hit checks it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version: bytes | None = None
        self._entries: dict[str, tuple[float, Caller]] = {}

    def get(self, plaintext: str, version: bytes | None) -> Caller | None:
        """`version`: AUTH_VERSION_KEY as read for this request; None when Redis could not say
        (then the database decides, and nothing is cached)."""
        key, now = digest(plaintext), time.monotonic()
        with self._lock:
            if version != self._version:
                self._entries.clear()
                self._version = version
            hit = self._entries.get(key)
        if hit is not None and hit[1].expired(utcnow()):
            return None
        if hit is not None and version is not None and hit[0] > now:
            return hit[1]
        try:
            principal = authenticate(plaintext)
        except (OperationalError, InterfaceError):
            if hit is None or version is None or now - hit[0] > STALE_SECONDS:
                raise
            # The database is unreachable: no access can change meanwhile (that takes a
            # commit, which would announce it), so the caller we had still holds, for a while.
            db.session.rollback()
            return hit[1]
        if principal is None:
            return None
        caller = Caller.of(principal)
        with self._lock:
            # Not if the version moved on while we looked: our answer may predate the change.
            if version is not None and version == self._version:
                if len(self._entries) >= CACHE_MAX_ENTRIES:
                    self._entries.clear()
                self._entries[key] = (now + CACHE_SECONDS, caller)
        return caller


def cached_caller(plaintext: str, version: bytes | None) -> Caller | None:
    return current_app.extensions["token_callers"].get(plaintext, version)


def init_app(app: Flask) -> None:
    app.extensions["token_callers"] = CallerCache()


# -- announcing changes that may end a cached caller -------------------------------------------
# Session events, so that no code path that changes access can forget to announce it.
_ACCESS_MODELS = (ApiToken, Membership, User, Tenant)
# Written by authenticate() itself, and where a user's next login lands: neither changes access.
_BOOKKEEPING = frozenset({"last_used_at", "last_tenant_id"})
_CHANGED = "sr_access_changed"


def _changes_access(obj: object) -> bool:
    if not isinstance(obj, _ACCESS_MODELS):
        return False
    return any(a.history.has_changes() for a in inspect(obj).attrs if a.key not in _BOOKKEEPING)


# Before the flush: after it, an attribute set to an SQL expression (a JSON column set to
# null()) no longer shows its change, and clearing a tenant's allowlist went unannounced.
@event.listens_for(Session, "before_flush")
def _note_changes(session: Session, _context: object, _instances: object) -> None:
    if any(isinstance(o, _ACCESS_MODELS) for o in session.deleted) or any(map(_changes_access, session.dirty)):
        session.info[_CHANGED] = True


@event.listens_for(Session, "do_orm_execute")
def _note_bulk_changes(state: ORMExecuteState) -> None:
    if (state.is_update or state.is_delete) and any(m.class_ in _ACCESS_MODELS for m in state.all_mappers):
        state.session.info[_CHANGED] = True


@event.listens_for(Session, "after_commit")
def _announce(session: Session) -> None:
    if not session.info.pop(_CHANGED, False):
        return
    try:
        get_redis().set(AUTH_VERSION_KEY, uuid.uuid4().hex)
    except (RedisError, RuntimeError):  # Redis away, or no app here: cached callers expire soon
        log.warning("access change not announced; cached token callers expire within %g s", CACHE_SECONDS)


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_CHANGED, None)
