"""A tenant's settings, changed by its admins on /settings and at /api/v1/settings: for now
the hosts its scripts may fetch (docs/fetch-guard.md#allowed-hosts). The worker reads
`Tenant.fetch_allowed_hosts` when a run starts."""

from typing import Any

from sqlalchemy import null, select

from webapp.audit.log import Target, record
from webapp.extensions import db
from webapp.models import Tenant
from worker.fetch.hosts import parse_host_patterns

FIELDS = ("fetch_allowed_hosts",)
MAX_HOSTS = 100


class SettingsInvalid(ValueError):
    def __init__(self, fields: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


def settings_json(tenant: Tenant) -> dict[str, Any]:
    return {"fetch_allowed_hosts": tenant.fetch_allowed_hosts}


def hosts_from_text(text: str) -> list[str]:
    """The form's list: one pattern a line, or comma- or space-separated."""
    try:
        return _checked(parse_host_patterns(text))
    except ValueError as exc:
        raise SettingsInvalid({"fetch_allowed_hosts": str(exc)}) from None


def hosts_from_json(value: Any) -> list[str] | None:
    """The API's value: null (any public host) or a list of patterns, one an item."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise SettingsInvalid({"fetch_allowed_hosts": "must be null or a list of host patterns (strings)"})
    if len(value) > MAX_HOSTS:
        raise SettingsInvalid({"fetch_allowed_hosts": f"at most {MAX_HOSTS} host patterns, not {len(value)}"})
    patterns = []
    for item in value:
        try:
            parsed = parse_host_patterns(item)
        except ValueError as exc:
            raise SettingsInvalid({"fetch_allowed_hosts": str(exc)}) from None
        if len(parsed) != 1:
            raise SettingsInvalid({"fetch_allowed_hosts": f"{item!r} is not one host pattern: give each its own item"})
        patterns.extend(parsed)
    return _checked(patterns)


def _checked(patterns: tuple[str, ...] | list[str]) -> list[str]:
    """Order kept, duplicates dropped, at most MAX_HOSTS."""
    unique = list(dict.fromkeys(patterns))
    if len(unique) > MAX_HOSTS:
        raise SettingsInvalid({"fetch_allowed_hosts": f"at most {MAX_HOSTS} host patterns, not {len(unique)}"})
    return unique


def update(tenant_id: int, fetch_allowed_hosts: list[str] | None) -> bool:
    """Save the (already checked) value with its audit entry, in one transaction; False when
    it was already the tenant's. On PostgreSQL the row is locked first, so the entry's old value
    is the one replaced even when two admins save at once (SQLite ignores the lock: two saves in
    the same instant may name the same old value)."""
    stmt = select(Tenant).where(Tenant.id == tenant_id).with_for_update().execution_options(populate_existing=True)
    tenant = db.session.scalars(stmt).one()
    old = tenant.fetch_allowed_hosts
    if old == fetch_allowed_hosts:
        db.session.commit()  # ends the transaction that holds the lock
        return False
    changes = {"fetch_allowed_hosts": {"old": old, "new": fetch_allowed_hosts}}
    record(tenant.id, "settings.update", Target("tenant", str(tenant.id), tenant.name), changes)
    # SQL NULL, not the JSON text 'null' that None would store: "no allowlist" reads the same
    # from any client of the table.
    tenant.fetch_allowed_hosts = null() if fetch_allowed_hosts is None else fetch_allowed_hosts
    db.session.commit()
    return True
