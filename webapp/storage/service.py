"""A tenant's storage items, shared by the scripts' host calls (worker/host_api.py) and the
storage pages: which items are live, matching a prefix, and deleting one with its bytes
uncounted from the tenant's quota (webapp/quotas.py)."""

from sqlalchemy import ColumnElement, delete, func, or_

from webapp import quotas
from webapp.extensions import db
from webapp.models import StorageItem, utcnow


def not_expired() -> ColumnElement[bool]:
    return or_(StorageItem.expires_at.is_(None), StorageItem.expires_at > utcnow())


def live(tenant_id: int) -> ColumnElement[bool]:
    """The tenant's items not past their expiry."""
    return (StorageItem.tenant_id == tenant_id) & not_expired()


def key_starts_with(prefix: str) -> ColumnElement[bool]:
    """Keys beginning with `prefix`, compared exactly: no LIKE wildcards or case folding
    (SQLite), and no collation order (a PostgreSQL locale), to get wrong."""
    return func.substr(StorageItem.key, 1, len(prefix)) == prefix


def delete_item(tenant_id: int, key: str) -> int | None:
    """Delete the tenant's item under `key` (live or expired) and uncount its bytes, in the
    caller's transaction. Returns the bytes freed, or None when there was no such item."""
    freed = db.session.scalar(
        delete(StorageItem)
        .where(StorageItem.tenant_id == tenant_id, StorageItem.key == key)
        .returning(StorageItem.size_bytes)
    )
    if freed:
        quotas.add(tenant_id, storage=-freed, written=True)
    return freed
