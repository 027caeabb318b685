"""Who a request acts as: a user in one tenant with one role (Principal, bound to the
database session), or the same as plain values (Caller, safe to keep across requests)."""

from dataclasses import dataclass
from datetime import datetime

from webapp.models import Tenant, User


@dataclass(frozen=True)
class Principal:
    user: User
    tenant: Tenant
    role: str
    expires_at: datetime | None = None  # an API token's expiry; None for sessions and lasting tokens
    token_id: int | None = None  # the API token it came with; None for sessions
    token_name: str = ""


@dataclass(frozen=True)
class TenantRef:
    id: int
    name: str
    # Its runs' fetch allowlist, handed to the worker with each call (no query there); a
    # cached caller is dropped when its tenant changes (webapp/auth/tokens.py).
    fetch_allowed_hosts: tuple[str, ...] | None


@dataclass(frozen=True)
class UserRef:
    id: int
    email: str


@dataclass(frozen=True)
class Caller:
    """A principal as plain values: what an endpoint call needs, safe to keep across requests
    and threads (the token cache holds these, never models bound to a session)."""

    tenant: TenantRef
    user: UserRef
    role: str
    expires_at: datetime | None = None

    @classmethod
    def of(cls, principal: Principal) -> "Caller":
        tenant, user = principal.tenant, principal.user
        hosts = tuple(tenant.fetch_allowed_hosts) if tenant.fetch_allowed_hosts is not None else None
        refs = TenantRef(tenant.id, tenant.name, hosts), UserRef(user.id, user.email)
        return cls(*refs, principal.role, principal.expires_at)

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now
