"""Database models. Field names are the REST API's (docs/api.md)."""

import uuid
from datetime import UTC, datetime
from typing import Any

from flask_login import UserMixin
from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import DateTime, TypeDecorator

from webapp.extensions import db

EXECUTION_STATUSES = ("queued", "running", "succeeded", "failed", "skipped")
TRIGGERS = ("manual", "api", "cron", "endpoint", "draft")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Stores UTC and always returns aware UTC datetimes, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Tenant(db.Model):
    __tablename__ = "tenants"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Host patterns (`api.example.com`, `*.example.com`) the tenant's scripts may fetch, set by
    # its admins; None: no allowlist (the platform's guard still applies).
    fetch_allowed_hosts: Mapped[list | None] = mapped_column(JSON)


class User(UserMixin, db.Model):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Part of the id kept in session cookies (Flask-Login's "alternative tokens"): raising it
    # at logout ends every session of the user, copied cookies included.
    session_version: Mapped[int] = mapped_column(default=0, server_default="0")
    # Where the next login lands (docs/members.md): set when the user picks a tenant.
    last_tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id", ondelete="SET NULL"))
    memberships: Mapped[list["Membership"]] = relationship(back_populates="user", cascade="all, delete-orphan")

    def get_id(self) -> str:
        return f"{self.id}:{self.session_version}"

    def end_sessions(self) -> None:
        """Every session of the user ends at the next commit, copied cookies included."""
        self.session_version += 1


class Membership(db.Model):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("user_id", "tenant_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    user: Mapped[User] = relationship(back_populates="memberships")
    tenant: Mapped[Tenant] = relationship()


class ApiToken(db.Model):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100), default="")
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # None: never
    user: Mapped[User] = relationship()
    tenant: Mapped[Tenant] = relationship()

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


class Invitation(db.Model):
    """An offer of a role in a tenant to an email address, accepted through a one-time link.
    Only the link's SHA-256 digest is kept; pending while not accepted, revoked or expired."""

    __tablename__ = "invitations"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(254))
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    invited_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    accepted_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    tenant: Mapped[Tenant] = relationship()
    invited_by: Mapped[User | None] = relationship(foreign_keys=[invited_by_id])


class _TriggerSettings:
    """Columns kept both on a script and on each of its versions (the versioned fields of
    webapp/scripts/fields.py)."""

    type: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(Text)
    cron_expression: Mapped[str | None] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    endpoint_path: Mapped[str | None] = mapped_column(String(500))
    endpoint_method: Mapped[str | None] = mapped_column(String(8))
    misfire_policy: Mapped[str | None] = mapped_column(String(16))
    limits: Mapped[dict | None] = mapped_column(JSON)


class Script(_TriggerSettings, db.Model):
    __tablename__ = "scripts"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", name="uq_scripts_tenant_name"),
        # endpoint_route is the path with parameter names blanked ("/orders/{}"), so
        # "/orders/{id}" and "/orders/{oid}" clash; NULL for non-endpoint scripts.
        UniqueConstraint("tenant_id", "endpoint_method", "endpoint_route", name="uq_scripts_tenant_route"),
    )
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="active")
    endpoint_route: Mapped[str | None] = mapped_column(String(500))
    version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    tenant: Mapped[Tenant] = relationship()
    created_by: Mapped[User | None] = relationship(foreign_keys=[created_by_id])
    updated_by: Mapped[User | None] = relationship(foreign_keys=[updated_by_id])
    versions: Mapped[list["ScriptVersion"]] = relationship(
        back_populates="script",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="ScriptVersion.version.desc()",
    )


class ScriptVersion(_TriggerSettings, db.Model):
    __tablename__ = "script_versions"
    __table_args__ = (UniqueConstraint("script_id", "version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    script_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("scripts.id", ondelete="CASCADE"))
    version: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    script: Mapped[Script] = relationship(back_populates="versions")
    created_by: Mapped[User | None] = relationship()


class Execution(db.Model):
    __tablename__ = "executions"
    __table_args__ = (
        # Exactly-once cron fires: one execution per (script, scheduled time). NULLs (non-cron
        # runs) never clash.
        UniqueConstraint("script_id", "scheduled_at", name="uq_executions_script_fire"),
        Index("ix_executions_script_queued", "script_id", "queued_at"),
        Index("ix_executions_tenant_queued", "tenant_id", "queued_at"),
        Index("ix_executions_status", "status"),
    )
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    script_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("scripts.id", ondelete="CASCADE"))
    script_version: Mapped[int]
    trigger: Mapped[str] = mapped_column(String(16))
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    error_kind: Mapped[str | None] = mapped_column(String(32))
    error_message: Mapped[str | None] = mapped_column(Text)
    params: Mapped[Any | None] = mapped_column(JSON)
    result: Mapped[Any | None] = mapped_column(JSON)
    logs: Mapped[list | None] = mapped_column(JSON)
    # Endpoint runs: method, path, status and sizes; never bodies or credentials.
    http_summary: Mapped[dict | None] = mapped_column(JSON)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_ms: Mapped[float | None]
    worker: Mapped[str | None] = mapped_column(String(200))
    # How the sandbox ran it: compile-cache hit, runtime id and run count, CPU time.
    runtime_info: Mapped[dict | None] = mapped_column(JSON)
    # A draft run's source (run unsaved, instead of its version's); None for every other run.
    source: Mapped[str | None] = mapped_column(Text)
    # Bytes of its params, logs, result and error message, counted against the tenant's
    # storage quota when the outcome is written (webapp/quotas.py).
    stored_bytes: Mapped[int] = mapped_column(default=0, server_default="0")
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # Names of the secrets the run read (never values); None: it read none.
    secrets_read: Mapped[list | None] = mapped_column(JSON)
    # What each fetch of the run was: method, scheme+host+path, status or error, ms, bytes
    # (worker/fetch/client.py summary); never a query string, a body or a secret value.
    http_calls: Mapped[list | None] = mapped_column(JSON)
    script: Mapped[Script] = relationship()


def _item_size(context: Any) -> int:
    row = context.get_current_parameters()
    return len(row["key"].encode()) + len(row["value"].encode())


class StorageItem(db.Model):
    """A tenant's persistent `storage` entry: a JSON value under a key, with an optional expiry."""

    __tablename__ = "storage_items"
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Bytes of key and value, counted against the tenant's storage quota (webapp/quotas.py).
    size_bytes: Mapped[int] = mapped_column(default=_item_size, server_default="0")


class TenantUsage(db.Model):
    """What a tenant's data takes, kept current by every write that changes it and recounted
    by upkeep (webapp/quotas.py). Locking its row serializes a tenant's quota checks."""

    __tablename__ = "tenant_usage"
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    storage_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    execution_bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class Secret(db.Model):
    """A tenant's secret: its value only as a Fernet token (webapp/secret_store)."""

    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_secrets_tenant_name"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    token: Mapped[str] = mapped_column(Text)
    # The id of the key that encrypted token (keys.key_id); None: stored before ids were kept.
    key_id: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    updated_by: Mapped[User | None] = relationship()


class AuditEntry(db.Model):
    """One change in a tenant, who made it and from where (docs/audit.md, webapp/audit/log.py).
    Append-only: only retention deletes rows. No foreign key but the tenant's, so entries
    outlive the users, tokens and scripts they name (labels are snapshots)."""

    __tablename__ = "audit_entries"
    __table_args__ = (
        Index("ix_audit_tenant_time", "tenant_id", "created_at"),
        Index("ix_audit_tenant_action", "tenant_id", "action", "created_at"),
        Index("ix_audit_tenant_actor", "tenant_id", "actor_label", "created_at"),
        Index("ix_audit_tenant_target", "tenant_id", "target_id", "created_at"),
        Index("ix_audit_time", "created_at"),  # retention
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor_type: Mapped[str] = mapped_column(String(16))  # user, token, cli, system
    actor_user_id: Mapped[int | None]
    actor_token_id: Mapped[int | None]
    actor_token_label: Mapped[str | None] = mapped_column(String(100))
    actor_label: Mapped[str] = mapped_column(String(254))  # the user's email (a token's too); cli; system
    action: Mapped[str] = mapped_column(String(32))
    target_type: Mapped[str] = mapped_column(String(16))
    target_id: Mapped[str] = mapped_column(String(64))
    target_label: Mapped[str] = mapped_column(String(254), default="")
    target_version: Mapped[int | None]  # the script version a change made (the versions page links here)
    address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(300))
    changes: Mapped[dict | None] = mapped_column(JSON)  # field names, old→new versions; never a value
